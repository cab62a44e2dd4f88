//! Token operations (API.md "Tokens").

use super::{Vault, WriteKey};
use crate::crypto::{DataKey, Envelope, MasterKey, seal_value};
use crate::error::{NotFoundReason, Result, VaultError};
use crate::identity::Identity;
use crate::record::{Record, check_time, new_record_id};
use crate::secret::Secret;
use crate::storage::{
    LINK_KEY, MetaRow, StorageError, StoredRecord, WriteOp, link_key, object_type,
};
use crate::token;
use zeroize::Zeroizing;

/// Attempts before giving up on a batch that keeps meeting conflicts. A random token collides
/// with probability below 2^-60 per attempt; identity races resolve on the second attempt.
const MAX_ATTEMPTS: usize = 8;

/// Options of `tokenCreate` / `tokensCreate` / `tokenUpsert`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Total token length, `"tk_"` included: 15..=40, default 32.
    pub length: Option<usize>,
    /// Milliseconds since the epoch; `None` never expires.
    pub expires_at: Option<i64>,
}

/// Where the tokens of new records come from.
enum TokenSource<'a> {
    Random(usize),
    Custom(&'a str),
}

/// A record that is there to be read: not soft-deleted, not expired.
pub(crate) fn check_readable(record: &Record, now: i64) -> Result<()> {
    if record.is_soft_deleted() {
        Err(VaultError::not_found(
            NotFoundReason::SoftDeleted,
            &record.token,
        ))
    } else if record.is_expired(now) {
        Err(VaultError::not_found(
            NotFoundReason::Expired,
            &record.token,
        ))
    } else {
        Ok(())
    }
}

/// The rows a new or rewritten record of `key` needs: the record op and, with an identity, its link.
pub(crate) fn record_ops(op: WriteOp, record_id: &str, key: &WriteKey) -> Vec<WriteOp> {
    let mut ops = vec![op];
    if let Some(identity_id) = &key.identity_id {
        ops.push(WriteOp::PutMeta(link_row(record_id, identity_id)));
    }
    ops
}

pub(crate) fn link_row(record_id: &str, identity_id: &str) -> MetaRow {
    let key = link_key(record_id);
    debug_assert_eq!(key.key, LINK_KEY);
    MetaRow {
        key,
        value: identity_id.to_owned(),
    }
}

/// Removing a record removes its link, and its identity when that was the identity's last record.
pub(crate) fn delete_ops(stored: &StoredRecord) -> Vec<WriteOp> {
    let mut ops = vec![
        WriteOp::DeleteRecord {
            id: stored.record.id.clone(),
        },
        WriteOp::DeleteMeta(link_key(&stored.record.id)),
    ];
    if let Some(identity_id) = &stored.identity_id {
        ops.push(prune_identity(identity_id));
    }
    ops
}

pub(crate) fn prune_identity(identity_id: &str) -> WriteOp {
    WriteOp::DeleteObjectIfUnreferenced {
        object_type: object_type::IDENTITY.to_owned(),
        object_id: identity_id.to_owned(),
        referrer_type: object_type::RECORD.to_owned(),
        referrer_key: LINK_KEY.to_owned(),
    }
}

fn check_expiry(expires_at: Option<i64>) -> Result<Option<i64>> {
    expires_at.map(|at| check_time(at, "expiresAt")).transpose()
}

impl Vault {
    /// Store `value` under a new random token.
    pub async fn token_create(
        &self,
        value: &str,
        secret: &Secret,
        options: &CreateOptions,
    ) -> Result<String> {
        let length = options.length.unwrap_or(token::DEFAULT_TOKEN_LEN);
        let mut tokens = self
            .insert_values(
                &[value],
                secret,
                TokenSource::Random(length),
                options.expires_at,
            )
            .await?;
        tokens
            .pop()
            .ok_or_else(|| VaultError::storage("no token was created"))
    }

    /// Store every value under its own new token, in one atomic write.
    pub async fn tokens_create(
        &self,
        values: &[&str],
        secret: &Secret,
        options: &CreateOptions,
    ) -> Result<Vec<String>> {
        let length = options.length.unwrap_or(token::DEFAULT_TOKEN_LEN);
        self.insert_values(
            values,
            secret,
            TokenSource::Random(length),
            options.expires_at,
        )
        .await
    }

    /// Store `value` under a token of the caller's choosing; `TOKEN_EXISTS` when it is taken.
    pub async fn token_create_custom(
        &self,
        token: &str,
        value: &str,
        secret: &Secret,
        expires_at: Option<i64>,
    ) -> Result<()> {
        token::check_custom(token)?;
        self.insert_values(&[value], secret, TokenSource::Custom(token), expires_at)
            .await
            .map(drop)
    }

    async fn insert_values(
        &self,
        values: &[&str],
        secret: &Secret,
        source: TokenSource<'_>,
        expires_at: Option<i64>,
    ) -> Result<Vec<String>> {
        self.ensure_open()?;
        if let TokenSource::Random(length) = source {
            token::check_length(length)?;
        }
        let expires_at = check_expiry(expires_at)?;
        self.check_policy(secret)?;
        if values.is_empty() {
            return Ok(vec![]);
        }
        let mk = self.master_key(secret).await?;
        for _ in 0..MAX_ATTEMPTS {
            let key = self.write_key(&mk).await?;
            let now = self.now();
            let mut batch = key.setup.clone();
            let mut tokens = Vec::with_capacity(values.len());
            for value in values {
                let token = match source {
                    TokenSource::Random(length) => token::generate(length)?,
                    TokenSource::Custom(token) => token.to_owned(),
                };
                let record = Record {
                    id: new_record_id()?,
                    value: seal_value(&key.key, &token, value)?,
                    token: token.clone(),
                    created_at: now,
                    updated_at: now,
                    expires_at,
                    soft_deleted_at: None,
                };
                let id = record.id.clone();
                batch.extend(record_ops(WriteOp::InsertRecord(record), &id, &key));
                tokens.push(token);
            }
            match self.storage.apply(batch).await {
                Ok(()) => return Ok(tokens),
                Err(StorageError::TokenTaken(token))
                    if matches!(source, TokenSource::Custom(_)) =>
                {
                    return Err(VaultError::TokenExists(token));
                }
                // A colliding random token or id, or an identity another writer created first:
                // nothing was written; draw again (and find that identity).
                Err(
                    StorageError::TokenTaken(_)
                    | StorageError::IdTaken(_)
                    | StorageError::UniqueValueTaken(_),
                ) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage(
            "could not store the value: conflicting writes kept happening; retry",
        ))
    }

    /// The value stored under `token`.
    pub async fn token_read(&self, token: &str, secret: &Secret) -> Result<String> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        let stored = self
            .record_by_token(token)
            .await?
            .ok_or_else(|| VaultError::not_found(NotFoundReason::Missing, token))?;
        check_readable(&stored.record, self.now())?;
        let opener = self.opener(secret, stored.identity_id.is_some()).await?;
        let opened = opener.open(&stored).map_err(|e| e.for_token(token))?;
        self.link_on_access(&opener, vec![(stored, opened.clone())])
            .await;
        Ok(opened)
    }

    /// The values of several tokens, in one storage round trip. Expired tokens are left out;
    /// duplicates appear once. Returns `(token, value)` pairs in the order tokens first appear.
    pub async fn tokens_read(
        &self,
        tokens: &[&str],
        secret: &Secret,
    ) -> Result<Vec<(String, String)>> {
        self.ensure_open()?;
        let mut unique: Vec<String> = Vec::with_capacity(tokens.len());
        for token in tokens {
            token::check_lookup(token)?;
            if !unique.iter().any(|t| t == token) {
                unique.push((*token).to_owned());
            }
        }
        if unique.is_empty() {
            return Ok(vec![]);
        }
        let found = self.storage.records_by_tokens(&unique).await?;
        let now = self.now();
        let mut missing = Vec::new();
        let mut soft_deleted = Vec::new();
        let mut live = Vec::with_capacity(found.len());
        for token in &unique {
            match found.iter().find(|s| &s.record.token == token) {
                None => missing.push(token.clone()),
                Some(s) if s.record.is_soft_deleted() => soft_deleted.push(token.clone()),
                Some(s) if s.record.is_expired(now) => {}
                Some(s) => live.push(s.clone()),
            }
        }
        // API.md: missing tokens are reported before any decryption failure.
        if !missing.is_empty() || !soft_deleted.is_empty() {
            let reason = if missing.is_empty() {
                NotFoundReason::SoftDeleted
            } else {
                NotFoundReason::Missing
            };
            missing.extend(soft_deleted);
            return Err(VaultError::RecordNotFound {
                reason,
                tokens: missing,
            });
        }
        if live.is_empty() {
            return Ok(vec![]);
        }
        let opener = self
            .opener(secret, live.iter().any(|s| s.identity_id.is_some()))
            .await?;
        let mut wrong_key = Vec::new();
        let mut damaged = Vec::new();
        let mut opened = Vec::with_capacity(live.len());
        for stored in live {
            match opener.open(&stored) {
                Ok(value) => opened.push((stored, value)),
                Err(VaultError::InvalidPassword { .. }) => {
                    wrong_key.push(stored.record.token.clone())
                }
                Err(_) => damaged.push(stored.record.token.clone()),
            }
        }
        if !wrong_key.is_empty() {
            return Err(VaultError::InvalidPassword { tokens: wrong_key });
        }
        if !damaged.is_empty() {
            return Err(VaultError::DecryptionFailed { tokens: damaged });
        }
        let values = opened
            .iter()
            .map(|(s, v)| (s.record.token.clone(), v.clone()))
            .collect();
        self.link_on_access(&opener, opened).await;
        Ok(values)
    }

    /// Resolve `key → token` to `key → value`. Keys of expired tokens are left out.
    pub async fn tokens_read_to_resolved_map(
        &self,
        key_to_token: &[(String, String)],
        secret: &Secret,
    ) -> Result<Vec<(String, String)>> {
        let tokens: Vec<&str> = key_to_token.iter().map(|(_, t)| t.as_str()).collect();
        let values = self.tokens_read(&tokens, secret).await?;
        Ok(key_to_token
            .iter()
            .filter_map(|(key, token)| {
                values
                    .iter()
                    .find(|(t, _)| t == token)
                    .map(|(_, v)| (key.clone(), v.clone()))
            })
            .collect())
    }

    /// Replace the value of `token`, keeping its expiry. The secret must be the one the record
    /// is stored with (change secrets with `bulk_rekey`).
    pub async fn token_update(&self, token: &str, value: &str, secret: &Secret) -> Result<()> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        self.check_policy(secret)?;
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.live_record(token).await?;
            let key = self
                .rewrite_key(&stored, secret)
                .await
                .map_err(|e| e.for_token(token))?;
            let mut record = stored.record.clone();
            record.value = seal_value(&key.key, token, value)?;
            record.updated_at = self.now();
            let id = record.id.clone();
            let mut batch = key.setup.clone();
            batch.extend(record_ops(
                WriteOp::UpdateRecord {
                    record,
                    expect_value: None,
                },
                &id,
                &key,
            ));
            match self.storage.apply(batch).await {
                Ok(()) => return Ok(()),
                Err(StorageError::RecordMissing(_)) => {
                    return Err(VaultError::not_found(NotFoundReason::Missing, token));
                }
                Err(StorageError::UniqueValueTaken(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage(
            "could not update the value: conflicting writes kept happening; retry",
        ))
    }

    /// Create when `existing` is empty or absent; otherwise update it and return it.
    pub async fn token_upsert(
        &self,
        existing: Option<&str>,
        value: &str,
        secret: &Secret,
        options: &CreateOptions,
    ) -> Result<String> {
        match existing {
            None | Some("") => self.token_create(value, secret, options).await,
            Some(token) => self
                .token_update(token, value, secret)
                .await
                .map(|()| token.to_owned()),
        }
    }

    /// Whether `token` exists and is not soft-deleted (expired tokens still exist).
    pub async fn token_exists(&self, token: &str) -> Result<bool> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        Ok(self
            .record_by_token(token)
            .await?
            .is_some_and(|s| !s.record.is_soft_deleted()))
    }

    /// Set a new expiry; `None` never expires.
    pub async fn token_renew(&self, token: &str, expires_at: Option<i64>) -> Result<()> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        let expires_at = check_expiry(expires_at)?;
        self.change_record(token, |r, now| {
            r.expires_at = expires_at;
            r.updated_at = now;
        })
        .await
    }

    /// Hide `token` from reads and listings until restored. Soft-deleting twice keeps the first time.
    pub async fn token_soft_delete(&self, token: &str) -> Result<()> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        self.change_record(token, |r, now| {
            if r.soft_deleted_at.is_none() {
                r.soft_deleted_at = Some(now);
                r.updated_at = now;
            }
        })
        .await
    }

    /// Undo a soft delete; a live token is left as it is.
    pub async fn token_restore(&self, token: &str) -> Result<()> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        self.change_record(token, |r, now| {
            if r.soft_deleted_at.is_some() {
                r.soft_deleted_at = None;
                r.updated_at = now;
            }
        })
        .await
    }

    /// Delete permanently. Deleting a missing token succeeds.
    pub async fn token_delete(&self, token: &str) -> Result<()> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        match self.record_by_token(token).await? {
            Some(stored) => Ok(self.storage.apply(delete_ops(&stored)).await?),
            None => Ok(()),
        }
    }

    /// A record that exists and is not soft-deleted (expired ones count: they can be updated).
    async fn live_record(&self, token: &str) -> Result<StoredRecord> {
        match self.record_by_token(token).await? {
            None => Err(VaultError::not_found(NotFoundReason::Missing, token)),
            Some(s) if s.record.is_soft_deleted() => {
                Err(VaultError::not_found(NotFoundReason::SoftDeleted, token))
            }
            Some(s) => Ok(s),
        }
    }

    /// Change a record's metadata (never its value); `RECORD_NOT_FOUND` when it is missing.
    pub(crate) async fn change_record(
        &self,
        token: &str,
        change: impl Fn(&mut Record, i64),
    ) -> Result<()> {
        let stored = self
            .record_by_token(token)
            .await?
            .ok_or_else(|| VaultError::not_found(NotFoundReason::Missing, token))?;
        self.change_stored(stored, change).await
    }

    pub(crate) async fn change_stored(
        &self,
        stored: StoredRecord,
        change: impl Fn(&mut Record, i64),
    ) -> Result<()> {
        let mut record = stored.record.clone();
        change(&mut record, self.now());
        if record == stored.record {
            return Ok(());
        }
        match self
            .storage
            .apply(vec![WriteOp::UpdateRecord {
                record,
                expect_value: None,
            }])
            .await
        {
            Err(StorageError::RecordMissing(_)) => Err(VaultError::not_found(
                NotFoundReason::Missing,
                &stored.record.token,
            )),
            other => Ok(other?),
        }
    }

    /// The key to rewrite a record with. The secret must open the record as it is now (its
    /// identity, or its key check value); with identities on, an unlinked record moves to the
    /// secret's identity.
    async fn rewrite_key(&self, stored: &StoredRecord, secret: &Secret) -> Result<WriteKey> {
        let envelope = Envelope::parse(&stored.record.value)?;
        let mk = self.master_key(secret).await?;
        match &stored.identity_id {
            Some(linked) => match self.find_identity(&mk).await? {
                Some(identity) if &identity.id == linked => Ok(WriteKey::from_identity(identity)),
                _ => Err(VaultError::InvalidPassword { tokens: vec![] }),
            },
            None => {
                if !envelope.was_sealed_with(&DataKey::from_master(&mk)) {
                    return Err(VaultError::InvalidPassword { tokens: vec![] });
                }
                self.write_key(&mk).await
            }
        }
    }

    /// Everything needed to open records with one secret: its master key and, when some record
    /// is linked or identities are on, its identity.
    pub(crate) async fn opener(&self, secret: &Secret, need_identity: bool) -> Result<Opener> {
        let mk = self.master_key(secret).await?;
        let identity = if need_identity || self.identities {
            self.find_identity(&mk).await?
        } else {
            None
        };
        Ok(Opener { mk, identity })
    }

    /// With identities on, a record still sealed with a master key is moved to the secret's
    /// identity when it is read (API.md "linked on access"). Best effort: the read has already
    /// succeeded, and a failed move changes nothing (the batch is atomic) and is retried on the
    /// next read.
    async fn link_on_access(&self, opener: &Opener, opened: Vec<(StoredRecord, String)>) {
        if !self.identities {
            return;
        }
        let unlinked: Vec<_> = opened
            .into_iter()
            .filter(|(s, _)| s.identity_id.is_none())
            .map(|(s, v)| (s, Zeroizing::new(v)))
            .collect();
        if !unlinked.is_empty() {
            let _ = self.relink(&opener.mk, &unlinked).await;
        }
    }

    /// Reseal `records` (with their plaintext) under the identity of `mk` and link them, in one
    /// atomic batch. Fails with `STORAGE` if a record changed meanwhile.
    pub(crate) async fn relink(
        &self,
        mk: &MasterKey,
        records: &[(StoredRecord, Zeroizing<String>)],
    ) -> Result<usize> {
        for _ in 0..MAX_ATTEMPTS {
            let key = self.write_key(mk).await?;
            let now = self.now();
            let mut batch = key.setup.clone();
            for (stored, plaintext) in records {
                let mut record = stored.record.clone();
                record.value = seal_value(&key.key, &record.token, plaintext)?;
                record.updated_at = now;
                let id = record.id.clone();
                let op = WriteOp::UpdateRecord {
                    record,
                    expect_value: Some(stored.record.value.clone()),
                };
                batch.extend(record_ops(op, &id, &key));
            }
            match self.storage.apply(batch).await {
                Ok(()) => return Ok(records.len()),
                // Another writer created this secret's identity first: use theirs.
                Err(StorageError::UniqueValueTaken(_)) => continue,
                Err(StorageError::Changed(id)) => {
                    return Err(VaultError::storage(format!(
                        "record {id} changed while it was being linked; nothing was changed, retry"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage(
            "could not link the records: conflicting writes kept happening; retry",
        ))
    }
}

/// One secret, unlocked: opens its records whatever key scheme they use.
pub(crate) struct Opener {
    pub mk: MasterKey,
    pub identity: Option<Identity>,
}

impl Opener {
    pub(crate) fn open(&self, stored: &StoredRecord) -> Result<String> {
        let record = &stored.record;
        let open = || match &stored.identity_id {
            Some(linked) => match &self.identity {
                Some(identity) if &identity.id == linked => {
                    Envelope::parse(&record.value)?.open(&identity.dek, &record.token)
                }
                _ => Err(VaultError::InvalidPassword { tokens: vec![] }),
            },
            None => {
                Envelope::parse(&record.value)?.open(&DataKey::from_master(&self.mk), &record.token)
            }
        };
        open().map_err(|e| e.for_token(&record.token))
    }
}
