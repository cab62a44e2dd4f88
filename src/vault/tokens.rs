//! Token operations (API.md "Tokens").
//!
//! Every write states what it relied on, and storage checks it inside the transaction that
//! applies it: a value update is a compare-and-swap on the value it read, metadata changes are
//! patches applied to the record as it is then, and values sealed under an identity are written
//! only while the identity's tag is still the secret's. Whatever runs between a read and the
//! write that depends on it, a write that resolves is never undone by another.

use super::{MAX_ATTEMPTS, Vault, WriteKey, new_write_epoch};
use crate::crypto::{DataKey, Envelope, MasterKey, seal_value};
use crate::error::{NotFoundReason, Result, VaultError};
use crate::keycache::KeyCache;
use crate::record::{Record, RecordRevs, check_time, new_record_id};
use crate::secret::Secret;
use crate::storage::{Optimistic, RecordChange, StorageError, WriteOp};
use crate::token;
use crate::vault::identity::{Identity, identity_find};
use std::collections::{HashMap, HashSet};
use zeroize::{Zeroize, Zeroizing};

/// Options of `tokenCreate` / `tokensCreate` / `tokenUpsert`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Total token length, `"tk_"` included: 15..=40, default 32.
    pub length: Option<usize>,
    /// Milliseconds since the epoch; `None` never expires.
    pub expires_at: Option<i64>,
}

/// What a read does with an expired record: `tokenRead` fails with `RECORD_NOT_FOUND`
/// (`expired`), `tokensRead` leaves it out (API.md).
enum Expired {
    Fail,
    LeaveOut,
}

/// The record a write by token changes: there, and not soft-deleted.
fn live(record: Option<Record>, token: &str) -> Result<Record> {
    match record {
        None => Err(VaultError::not_found(NotFoundReason::Missing, token)),
        Some(r) if r.is_soft_deleted() => {
            Err(VaultError::not_found(NotFoundReason::SoftDeleted, token))
        }
        Some(r) => Ok(r),
    }
}

/// Where the tokens of new records come from.
enum TokenSource<'a> {
    Random(usize),
    Custom(&'a str),
}

/// A reseal of `record` from `expect` to `value` under `key` (its identity becomes the record's).
pub(crate) fn reseal_op(record: &Record, value: String, key: &WriteKey, at: i64) -> WriteOp {
    WriteOp::ChangeRecord {
        id: record.id.clone(),
        change: RecordChange::Reseal {
            expect: record.value.clone(),
            value,
            password_id: key.identity_id.clone(),
        },
        at,
    }
}

/// A caller's new value for `record` (`tokenUpdate`): [`reseal_op`] with a compare-and-swap on
/// the soft-delete state too. A `tokenSoftDelete` that lands while the update derives its key
/// fails the batch, and the next round reports the record soft-deleted, as it does without the
/// race.
fn update_op(record: &Record, value: String, key: &WriteKey, at: i64) -> WriteOp {
    WriteOp::ChangeRecord {
        id: record.id.clone(),
        change: RecordChange::Update {
            expect: record.value.clone(),
            value,
            password_id: key.identity_id.clone(),
        },
        at,
    }
}

fn check_expiry(expires_at: Option<i64>) -> Result<Option<i64>> {
    expires_at.map(|at| check_time(at, "expiresAt")).transpose()
}

/// Which key a value was sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealedWith {
    /// The secret's identity's data key.
    Identity,
    /// The secret's master key (identities off, or a record written before they were on).
    Master,
}

/// One secret, unlocked: opens its records whatever key scheme they use, telling which by the
/// envelope's key check value (FORMAT.md), so reading never needs the record's link row.
pub(crate) struct Opener {
    pub mk: MasterKey,
    /// The lock epoch `mk` belongs to (see [`Vault::unlocked`]).
    pub epoch: u64,
    master: DataKey,
    pub identity: Option<Identity>,
    /// Further identities the same secret opens (sync can bring two with one tag, see
    /// [`Vault::find_identities_in`]): read with, never written with.
    pub also: Vec<Identity>,
}

/// A record's envelope, parsed once, and whether the secret's master key sealed it.
pub(crate) struct Parsed {
    envelope: Result<Envelope>,
    by_master: bool,
}

impl Opener {
    fn new(mk: MasterKey, epoch: u64, keys: &KeyCache) -> Self {
        Opener {
            master: keys.master_data_key(&mk),
            mk,
            epoch,
            identity: None,
            also: Vec::new(),
        }
    }

    /// The secret's identities, the canonical one first (as [`Vault::find_identities_in`]
    /// returns them).
    fn found(&mut self, identities: Vec<Identity>) {
        let mut identities = identities.into_iter();
        self.identity = identities.next();
        self.also = identities.collect();
    }

    /// Which of this secret's keys sealed `envelope`, if any.
    pub(crate) fn key_of(&self, envelope: &Envelope) -> Option<(&DataKey, SealedWith)> {
        if let Some(dek) = self.identity_key_of(envelope) {
            return Some((dek, SealedWith::Identity));
        }
        envelope
            .was_sealed_with(&self.master)
            .then_some((&self.master, SealedWith::Master))
    }

    /// The data key of whichever identity of this secret sealed `envelope`.
    fn identity_key_of(&self, envelope: &Envelope) -> Option<&DataKey> {
        self.identity
            .iter()
            .chain(&self.also)
            .map(|identity| &identity.dek)
            .find(|dek| envelope.was_sealed_with(dek))
    }

    fn parse(&self, record: &Record) -> Parsed {
        let envelope = Envelope::parse(&record.value);
        let by_master = envelope
            .as_ref()
            .is_ok_and(|e| e.was_sealed_with(&self.master));
        Parsed {
            envelope,
            by_master,
        }
    }

    /// Open `record` from its parsed envelope: one key check per key tried, no second parse.
    pub(crate) fn open(
        &self,
        record: &Record,
        parsed: Parsed,
    ) -> Result<(Zeroizing<String>, SealedWith)> {
        let open = || {
            let envelope = parsed.envelope?;
            let (key, sealed_with) = if parsed.by_master {
                (&self.master, SealedWith::Master)
            } else {
                match self.identity_key_of(&envelope) {
                    Some(dek) => (dek, SealedWith::Identity),
                    None => return Err(VaultError::InvalidPassword { tokens: vec![] }),
                }
            };
            Ok((
                // `parse` or `identity_key_of` matched the key's kcv.
                Zeroizing::new(envelope.open_matched(key, &record.token)?),
                sealed_with,
            ))
        };
        open().map_err(|e: VaultError| e.for_token(&record.token))
    }
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
        self.ensure_open()?;
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
        let (mk, epoch) = self.unlocked(secret).await?;
        for _ in 0..MAX_ATTEMPTS {
            let key = self.insert_key(&mk, epoch).await?;
            let stamp = self.stamp()?;
            let now = stamp.at;
            let mut batch = key.batch_ops()?;
            batch.reserve(values.len());
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
                    password_id: key.identity_id.clone(),
                    revs: RecordRevs::all(stamp.rev),
                };
                batch.push(WriteOp::InsertRecord(Box::new(record)));
                tokens.push(token);
            }
            let committed = self.storage.apply(stamp, batch).await;
            if let (Ok(()), Some(id), Some(slot)) = (&committed, &key.identity_id, &key.slot) {
                self.keys.remember_writes(&mk, id, slot);
            } else {
                self.keys.forget_writes(&mk);
            }
            match committed {
                Ok(()) => {
                    self.settle_kdf();
                    return Ok(tokens);
                }
                Err(StorageError::TokenTaken(token))
                    if matches!(source, TokenSource::Custom(_)) =>
                {
                    return Err(VaultError::TokenExists(token));
                }
                // A colliding random token or id, an identity another writer created first, or
                // one a rekey moved meanwhile: nothing was written; draw again, look again.
                Err(
                    StorageError::TokenTaken(_)
                    | StorageError::IdTaken(_)
                    | StorageError::UniqueValueTaken(_)
                    | StorageError::MetaTaken(_)
                    | StorageError::MetaChanged(_),
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
        self.read_values(vec![token.to_owned()], secret, Expired::Fail)
            .await?
            .pop()
            .map(|(_, value)| value)
            .ok_or_else(|| VaultError::storage("the record was read but not opened"))
    }

    /// The values of several tokens, in one storage round trip. Expired tokens are left out;
    /// duplicates appear once. Returns `(token, value)` pairs in the order tokens first appear.
    pub async fn tokens_read(
        &self,
        tokens: &[&str],
        secret: &Secret,
    ) -> Result<Vec<(String, String)>> {
        self.ensure_open()?;
        let mut seen = HashSet::with_capacity(tokens.len());
        let mut unique: Vec<String> = Vec::with_capacity(tokens.len());
        for token in tokens {
            token::check_lookup(token)?;
            if seen.insert(*token) {
                unique.push((*token).to_owned());
            }
        }
        if unique.is_empty() {
            return Ok(vec![]);
        }
        self.read_values(unique, secret, Expired::LeaveOut).await
    }

    /// The values of `tokens` (checked, without duplicates), in one storage round trip, as
    /// `tokenRead` and `tokensRead` answer.
    async fn read_values(
        &self,
        tokens: Vec<String>,
        secret: &Secret,
        expired: Expired,
    ) -> Result<Vec<(String, String)>> {
        let (found, opener) = self.records_to_open(&tokens, secret).await?;
        let now = self.now();
        let mut missing = Vec::new();
        let mut soft_deleted = Vec::new();
        let mut live = Vec::with_capacity(found.len());
        for (token, record) in tokens.into_iter().zip(found) {
            match record {
                None => missing.push(token),
                Some(r) if r.is_soft_deleted() => soft_deleted.push(token),
                Some(r) if r.is_expired(now) => {
                    if let Expired::Fail = expired {
                        return Err(VaultError::not_found(NotFoundReason::Expired, &r.token));
                    }
                }
                Some(r) => live.push(r),
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
        let (opener, parsed) = match opener {
            Some(opener) => {
                let parsed = live.iter().map(|r| opener.parse(r)).collect();
                (opener, parsed)
            }
            None => self.opener(secret, &live).await?,
        };
        let mut wrong_key = Vec::new();
        let mut damaged = Vec::new();
        let mut values = Vec::with_capacity(live.len());
        let mut unlinked = Vec::new();
        for (record, parsed) in live.into_iter().zip(parsed) {
            match opener.open(&record, parsed) {
                Ok((value, sealed_with)) => {
                    values.push((record.token.clone(), value.as_str().to_owned()));
                    if sealed_with == SealedWith::Master && self.identities {
                        unlinked.push((record, value));
                    }
                }
                Err(VaultError::InvalidPassword { .. }) => wrong_key.push(record.token),
                Err(_) => damaged.push(record.token),
            }
        }
        if !wrong_key.is_empty() {
            return Err(VaultError::InvalidPassword { tokens: wrong_key });
        }
        if !damaged.is_empty() {
            return Err(VaultError::DecryptionFailed { tokens: damaged });
        }
        self.link_on_access(&opener, unlinked).await;
        Ok(values)
    }

    /// Resolve `key → token` to `key → value`. Keys of expired tokens are left out.
    pub async fn tokens_read_to_resolved_map(
        &self,
        key_to_token: &[(String, String)],
        secret: &Secret,
    ) -> Result<Vec<(String, String)>> {
        let tokens: Vec<&str> = key_to_token.iter().map(|(_, t)| t.as_str()).collect();
        let mut values: HashMap<String, String> = self
            .tokens_read(&tokens, secret)
            .await?
            .into_iter()
            .collect();
        let resolved = key_to_token
            .iter()
            .filter_map(|(key, token)| values.get(token).map(|v| (key.clone(), v.clone())))
            .collect();
        // The result holds copies (two keys may ask for one token): wipe these.
        values.values_mut().for_each(Zeroize::zeroize);
        Ok(resolved)
    }

    /// Replace the value of `token`, keeping its expiry. The secret must be the one the record
    /// is stored with (change secrets with `bulk_rekey`).
    pub async fn token_update(&self, token: &str, value: &str, secret: &Secret) -> Result<()> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        self.check_policy(secret)?;
        for _ in 0..MAX_ATTEMPTS {
            // With identities on and the key cached, the record and the identity rows that
            // tell which key to write with come in one round trip, as for a read.
            let (mut found, opener) = self.records_to_open(&[token.to_owned()], secret).await?;
            let record = live(found.pop().flatten(), token)?;
            let key = self
                .rewrite_key(&record, opener, secret)
                .await
                .map_err(|e| e.for_token(token))?;
            let sealed = seal_value(&key.key, token, value)?;
            let mut batch = key.batch_ops()?;
            let stamp = self.stamp_after([&record])?;
            batch.push(update_op(&record, sealed, &key, stamp.at));
            match self.storage.apply(stamp, batch).await {
                Ok(()) => return Ok(()),
                Err(StorageError::RecordMissing(_)) => {
                    return Err(VaultError::not_found(NotFoundReason::Missing, token));
                }
                // The value changed since it was read (a rekey or another update committed):
                // read it again, and check again that this secret opens it.
                Err(
                    StorageError::Changed(_)
                    | StorageError::UniqueValueTaken(_)
                    | StorageError::MetaTaken(_)
                    | StorageError::MetaChanged(_),
                ) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage(
            "could not update the value: conflicting writes kept happening; retry",
        ))
    }

    /// Create when `existing` is empty or absent; otherwise update it and return it (its token
    /// and expiry stay; `options` are checked either way).
    pub async fn token_upsert(
        &self,
        existing: Option<&str>,
        value: &str,
        secret: &Secret,
        options: &CreateOptions,
    ) -> Result<String> {
        self.ensure_open()?;
        // The options are the create's, checked on either path (API.md: a length out of range
        // is INVALID_ARGUMENT), though an update leaves the token and its expiry as they are.
        if let Some(length) = options.length {
            token::check_length(length)?;
        }
        check_expiry(options.expires_at)?;
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
            .is_some_and(|r| !r.is_soft_deleted()))
    }

    /// Set a new expiry; `None` never expires.
    pub async fn token_renew(&self, token: &str, expires_at: Option<i64>) -> Result<()> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        let expires_at = check_expiry(expires_at)?;
        self.change_by_token(token, RecordChange::Renew { expires_at })
            .await
    }

    /// Hide `token` from reads and listings until restored. Soft-deleting twice keeps the first time.
    pub async fn token_soft_delete(&self, token: &str) -> Result<()> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        self.change_by_token(
            token,
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
        )
        .await
    }

    /// Undo a soft delete; a live token is left as it is.
    pub async fn token_restore(&self, token: &str) -> Result<()> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        self.change_by_token(token, RecordChange::Restore).await
    }

    /// Delete permanently. Deleting a missing token succeeds; the result says whether a record
    /// was deleted (the `records` of the operation's event).
    pub async fn token_delete(&self, token: &str) -> Result<bool> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        match self.record_by_token(token).await? {
            Some(record) => {
                self.observe(&record);
                self.delete_by_id(&record.id).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Delete a record, its link and, with its last record, its identity. A delete renews the
    /// write epoch: a rekey running meanwhile counts the records it moves.
    pub(crate) async fn delete_by_id(&self, id: &str) -> Result<()> {
        Ok(self
            .storage
            .apply(
                self.stamp()?,
                vec![
                    WriteOp::DeleteRecord {
                        id: id.to_owned(),
                        if_expired_at: None,
                    },
                    new_write_epoch()?,
                ],
            )
            .await?)
    }

    /// A record that exists and is not soft-deleted (expired ones count: they can be updated).
    async fn change_by_token(&self, token: &str, change: RecordChange) -> Result<()> {
        let record = self
            .record_by_token(token)
            .await?
            .ok_or_else(|| VaultError::not_found(NotFoundReason::Missing, token))?;
        self.observe(&record);
        match self.change_by_id(&record.id, change).await {
            // Deleted since it was read: report the token the caller gave.
            Err(VaultError::RecordNotFound { reason, .. }) => Err(VaultError::RecordNotFound {
                reason,
                tokens: vec![token.to_owned()],
            }),
            other => other,
        }
    }

    /// Apply a metadata change to the record as it is when the change commits.
    pub(crate) async fn change_by_id(&self, id: &str, change: RecordChange) -> Result<()> {
        let stamp = self.stamp()?;
        let op = WriteOp::ChangeRecord {
            id: id.to_owned(),
            change,
            at: stamp.at,
        };
        match self.storage.apply(stamp, vec![op]).await {
            Err(StorageError::RecordMissing(_)) => {
                Err(VaultError::not_found(NotFoundReason::Missing, id))
            }
            other => Ok(other?),
        }
    }

    /// The key to rewrite a record with. The secret must open the record as it is now (its
    /// identity's key or its master key, by key check); with identities on, a record sealed with
    /// the master key moves to the secret's identity. `opener` is the secret's, when it came
    /// with the record ([`Vault::records_to_open`]).
    async fn rewrite_key(
        &self,
        record: &Record,
        opener: Option<Opener>,
        secret: &Secret,
    ) -> Result<WriteKey> {
        let envelope = Envelope::parse(&record.value)?;
        let opener = match opener {
            Some(opener) => opener,
            None => self.opener(secret, std::slice::from_ref(record)).await?.0,
        };
        match opener.key_of(&envelope) {
            Some((_, SealedWith::Identity)) => match opener.identity {
                Some(identity) => Ok(WriteKey::from_identity(
                    identity,
                    self.keys.identity_tag(&opener.mk),
                )),
                None => Err(VaultError::InvalidPassword { tokens: vec![] }),
            },
            Some((_, SealedWith::Master)) => self.write_key(&opener.mk, opener.epoch).await,
            None => Err(VaultError::InvalidPassword { tokens: vec![] }),
        }
    }

    /// Everything needed to open `records` with one secret, and their envelopes parsed once:
    /// its master key and, when identities are on or some record is not sealed with the master
    /// key, its identity.
    pub(crate) async fn opener(
        &self,
        secret: &Secret,
        records: &[Record],
    ) -> Result<(Opener, Vec<Parsed>)> {
        let (mk, epoch) = self.unlocked(secret).await?;
        let mut opener = Opener::new(mk, epoch, &self.keys);
        let parsed: Vec<Parsed> = records.iter().map(|r| opener.parse(r)).collect();
        if self.identities || parsed.iter().any(|p| p.envelope.is_ok() && !p.by_master) {
            let identities = self
                .find_identities_in(&Optimistic(&*self.storage), &opener.mk, epoch)
                .await?;
            opener.found(identities);
        }
        Ok((opener, parsed))
    }

    /// The records of `tokens`, and `secret`'s opener when it comes with them. With identities
    /// on and the key cached (after `unlock()`, the usual case) the records and the secret's
    /// identity rows come in one round trip (API.md: `tokensRead` is one). Otherwise the
    /// records come first, as the opener may not need identity rows, and a missing token then
    /// fails without a key derivation, whose cost dwarfs a second round trip.
    async fn records_to_open(
        &self,
        tokens: &[String],
        secret: &Secret,
    ) -> Result<(Vec<Option<Record>>, Option<Opener>)> {
        let Some((mk, epoch)) = self.identities.then(|| self.cached_key(secret)).flatten() else {
            return Ok((self.storage.records_by_tokens(tokens).await?, None));
        };
        let tag = self.keys.identity_tag(&mk);
        let (records, rows) = self
            .storage
            .records_by_tokens_and_meta(tokens, identity_find(&tag))
            .await?;
        self.check_key_epoch(epoch)?;
        let mut opener = Opener::new(mk, epoch, &self.keys);
        opener.found(self.identities_from(&rows, &opener.mk)?);
        Ok((records, Some(opener)))
    }

    /// With identities on, a record still sealed with a master key is moved to the secret's
    /// identity when it is read (API.md "linked on access"). Best effort: the read has already
    /// succeeded, and a failed move changes nothing (the batch is atomic) and is retried on the
    /// next read.
    async fn link_on_access(&self, opener: &Opener, opened: Vec<(Record, Zeroizing<String>)>) {
        if self.identities && !opened.is_empty() {
            let _ = self.relink(&opener.mk, opener.epoch, &opened).await;
        }
    }

    /// Reseal `records` (with their plaintext) under the identity of `mk` and link them, in one
    /// atomic batch. Fails with `STORAGE` if a record changed meanwhile.
    pub(crate) async fn relink(
        &self,
        mk: &MasterKey,
        epoch: u64,
        records: &[(Record, Zeroizing<String>)],
    ) -> Result<usize> {
        for _ in 0..MAX_ATTEMPTS {
            let key = self.write_key(mk, epoch).await?;
            let stamp = self.stamp_after(records.iter().map(|(record, _)| record))?;
            let mut batch = key.batch_ops()?;
            for (record, plaintext) in records {
                let sealed = seal_value(&key.key, &record.token, plaintext)?;
                batch.push(reseal_op(record, sealed, &key, stamp.at));
            }
            match self.storage.apply(stamp, batch).await {
                Ok(()) => return Ok(records.len()),
                // Another writer created this secret's identity first, or moved it: look again.
                Err(
                    StorageError::UniqueValueTaken(_)
                    | StorageError::MetaTaken(_)
                    | StorageError::MetaChanged(_),
                ) => continue,
                Err(StorageError::Changed(_) | StorageError::RecordMissing(_)) => {
                    return Err(VaultError::storage(
                        "a record changed while it was being linked; nothing was changed, retry",
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage(
            "could not link the records: conflicting writes kept happening; retry",
        ))
    }
}
