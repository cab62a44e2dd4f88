//! The one error type of the crate and its stable codes (API.md, "Errors").
//!
//! Codes are written out by hand in [`ErrorCode::as_str`] and pinned by a test: renaming a variant
//! must never change what JavaScript sees.

use std::fmt;

/// Why a token did not resolve to a readable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFoundReason {
    /// No record has this token (or id).
    Missing,
    /// The record exists but is soft-deleted.
    SoftDeleted,
    /// The record exists but `now > expiresAt`.
    Expired,
}

impl NotFoundReason {
    /// The `error.reason` string of API.md.
    pub fn as_str(self) -> &'static str {
        match self {
            NotFoundReason::Missing => "missing",
            NotFoundReason::SoftDeleted => "soft_deleted",
            NotFoundReason::Expired => "expired",
        }
    }
}

/// The stable codes of API.md. `VaultError::code` maps every variant to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    RecordNotFound,
    InvalidPassword,
    DecryptionFailed,
    PasswordPolicy,
    InvalidArgument,
    TokenExists,
    IdentityNotFound,
    IdentityDisabled,
    QuotaExceeded,
    Storage,
    Aborted,
    Closed,
    SyncConflict,
}

impl ErrorCode {
    /// Every code, in the order of the API.md table.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::RecordNotFound,
        ErrorCode::InvalidPassword,
        ErrorCode::DecryptionFailed,
        ErrorCode::PasswordPolicy,
        ErrorCode::InvalidArgument,
        ErrorCode::TokenExists,
        ErrorCode::IdentityNotFound,
        ErrorCode::IdentityDisabled,
        ErrorCode::QuotaExceeded,
        ErrorCode::Storage,
        ErrorCode::Aborted,
        ErrorCode::Closed,
        ErrorCode::SyncConflict,
    ];

    /// The string JavaScript sees as `error.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RecordNotFound => "RECORD_NOT_FOUND",
            ErrorCode::InvalidPassword => "INVALID_PASSWORD",
            ErrorCode::DecryptionFailed => "DECRYPTION_FAILED",
            ErrorCode::PasswordPolicy => "PASSWORD_POLICY",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::TokenExists => "TOKEN_EXISTS",
            ErrorCode::IdentityNotFound => "IDENTITY_NOT_FOUND",
            ErrorCode::IdentityDisabled => "IDENTITY_DISABLED",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::Storage => "STORAGE",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::Closed => "CLOSED",
            ErrorCode::SyncConflict => "SYNC_CONFLICT",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The platform's own error behind a storage failure (what a SQL executor threw, an IndexedDB
/// `DOMException`), kept as it is for JavaScript's `error.cause` (API.md "Errors": `cause` keeps
/// the original). Nothing outside the JavaScript bindings. Context, not data: two errors compare
/// equal whatever their originals.
#[derive(Clone, Default)]
pub struct Original(#[cfg(feature = "wasm")] Option<wasm_bindgen::JsValue>);

impl Original {
    /// The JavaScript value thrown.
    #[cfg(feature = "wasm")]
    pub fn thrown(value: &wasm_bindgen::JsValue) -> Self {
        Original(Some(value.clone()))
    }

    /// The value thrown, if one was kept.
    #[cfg(feature = "wasm")]
    pub fn value(&self) -> Option<&wasm_bindgen::JsValue> {
        self.0.as_ref()
    }
}

impl PartialEq for Original {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Original {}

impl fmt::Debug for Original {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Original")
    }
}

/// A backend failure: `STORAGE`'s fields, and `QUOTA_EXCEEDED`'s (which has no name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFailure {
    /// The backend's own name for the failure (for IndexedDB, the DOMException name).
    pub name: Option<String>,
    pub message: String,
    /// What the platform threw, when it threw something.
    pub original: Original,
}

/// Every failure of the vault. Messages say what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("{}", not_found_message(*reason, tokens))]
    RecordNotFound {
        reason: NotFoundReason,
        /// The tokens (or ids) concerned; for batch reads, every one that was not found.
        tokens: Vec<String>,
    },

    #[error("{}", invalid_password_message(tokens))]
    InvalidPassword { tokens: Vec<String> },

    #[error("{}", decryption_failed_message(tokens))]
    DecryptionFailed { tokens: Vec<String> },

    #[error("password rejected by the vault's password policy: {0}")]
    PasswordPolicy(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error(
        "the custom token is already taken (error.tokens holds it); choose another token or update the existing record"
    )]
    TokenExists(String),

    #[error(
        "no password identity matches this secret; pass a password or key that already opens the records (the current one, not an old or new one); records written before identities were on get their identity from migrateRecordLinks(secret) or a read"
    )]
    IdentityNotFound,

    #[error(
        "password identities are disabled for this vault; open it with `passwordIdentity: true` to use {0}"
    )]
    IdentityDisabled(&'static str),

    /// Boxed, as `Storage` is: a `String` and an `Original` side by side would make this the
    /// largest variant.
    #[error("storage quota exceeded: {}; free space or delete records, then retry", .0.message)]
    QuotaExceeded(Box<StorageFailure>),

    /// Boxed: the largest variant otherwise, it would set the size of every `Result` that
    /// carries a `VaultError`, and so of the code that moves them.
    #[error("storage failure{}: {}", .0.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(), .0.message)]
    Storage(Box<StorageFailure>),

    #[error("the operation was aborted before it committed; nothing was changed")]
    Aborted,

    #[error(
        "the vault was locked while {0} ran, so the keys it held were dropped; nothing was changed. Call it again with the secret"
    )]
    LockedDuring(&'static str),

    #[error("the vault is closed; open a new Vault to continue")]
    Closed,

    /// SYNC.md 5: this replica holds another vault than the sync server's.
    #[error("{0}")]
    SyncConflict(String),
}

// API.md "Errors": a message never quotes what the caller passed (a token argument may be a
// password passed in the wrong place). Messages say how many records an error is about;
// `error.tokens` carries the tokens themselves, as data.
fn not_found_message(reason: NotFoundReason, tokens: &[String]) -> String {
    let n = tokens.len();
    let many = n > 1;
    match reason {
        NotFoundReason::Missing if many => {
            format!("no record exists for {n} of the tokens (error.tokens lists them)")
        }
        NotFoundReason::Missing => {
            "no record exists for this token or id (error.tokens holds it)".to_owned()
        }
        NotFoundReason::SoftDeleted if many => format!(
            "{n} records are soft-deleted; restore them first (error.tokens lists their tokens)"
        ),
        NotFoundReason::SoftDeleted => {
            "the record is soft-deleted; restore it first (error.tokens holds its token)".to_owned()
        }
        NotFoundReason::Expired if many => {
            format!("{n} records have expired; renew them first (error.tokens lists their tokens)")
        }
        NotFoundReason::Expired => {
            "the record has expired; renew it first (error.tokens holds its token)".to_owned()
        }
    }
}

/// "the record (error.tokens holds its token)", "3 records (error.tokens lists their tokens)".
fn records(tokens: &[String]) -> String {
    match tokens.len() {
        1 => "the record (error.tokens holds its token)".to_owned(),
        n => format!("{n} records (error.tokens lists their tokens)"),
    }
}

/// Without tokens the error is about the vault, not a record: `unlock()` checking a secret
/// against what is stored.
fn invalid_password_message(tokens: &[String]) -> String {
    if tokens.is_empty() {
        return "the password or key does not open this vault; check that you pass the secret its values were stored with".to_owned();
    }
    format!(
        "the password or key does not open {}; check that you pass the secret the value was stored with",
        records(tokens)
    )
}

/// Without tokens the damaged ciphertext is a key the vault keeps (a password identity's
/// wrapped data key), not a record's value.
fn decryption_failed_message(tokens: &[String]) -> String {
    if tokens.is_empty() {
        return "a key stored in this vault (a password identity's data key) is damaged or was tampered with; the values it seals cannot be recovered".to_owned();
    }
    format!(
        "the stored value of {} is damaged or was tampered with; it cannot be recovered",
        records(tokens)
    )
}

impl VaultError {
    /// The stable code of API.md.
    pub fn code(&self) -> ErrorCode {
        match self {
            VaultError::RecordNotFound { .. } => ErrorCode::RecordNotFound,
            VaultError::InvalidPassword { .. } => ErrorCode::InvalidPassword,
            VaultError::DecryptionFailed { .. } => ErrorCode::DecryptionFailed,
            VaultError::PasswordPolicy(_) => ErrorCode::PasswordPolicy,
            VaultError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            VaultError::TokenExists(_) => ErrorCode::TokenExists,
            VaultError::IdentityNotFound => ErrorCode::IdentityNotFound,
            VaultError::IdentityDisabled(_) => ErrorCode::IdentityDisabled,
            VaultError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            VaultError::Storage(_) => ErrorCode::Storage,
            VaultError::LockedDuring(_) => ErrorCode::Aborted,
            VaultError::Aborted => ErrorCode::Aborted,
            VaultError::Closed => ErrorCode::Closed,
            VaultError::SyncConflict(_) => ErrorCode::SyncConflict,
        }
    }

    /// `error.reason` for `RECORD_NOT_FOUND`.
    pub fn reason(&self) -> Option<NotFoundReason> {
        match self {
            VaultError::RecordNotFound { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// `error.tokens`: the tokens the error is about (never in the message).
    pub fn tokens(&self) -> Option<&[String]> {
        match self {
            VaultError::RecordNotFound { tokens, .. }
            | VaultError::InvalidPassword { tokens }
            | VaultError::DecryptionFailed { tokens } => Some(tokens),
            VaultError::TokenExists(token) => Some(std::slice::from_ref(token)),
            _ => None,
        }
    }

    /// The backend's own error name (`cause` in JavaScript), when there is one.
    pub fn cause_name(&self) -> Option<&str> {
        match self {
            VaultError::Storage(failure) => failure.name.as_deref(),
            VaultError::QuotaExceeded(_) => Some("QuotaExceededError"),
            _ => None,
        }
    }

    pub(crate) fn not_found(reason: NotFoundReason, token: &str) -> Self {
        VaultError::RecordNotFound {
            reason,
            tokens: vec![token.to_owned()],
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        VaultError::InvalidArgument(message.into())
    }

    pub(crate) fn storage(message: impl Into<String>) -> Self {
        VaultError::Storage(Box::new(StorageFailure {
            original: Default::default(),
            name: None,
            message: message.into(),
        }))
    }

    /// Attach the token a single-record crypto failure happened on.
    pub(crate) fn for_token(self, token: &str) -> Self {
        match self {
            VaultError::InvalidPassword { tokens } if tokens.is_empty() => {
                VaultError::InvalidPassword {
                    tokens: vec![token.to_owned()],
                }
            }
            VaultError::DecryptionFailed { tokens } if tokens.is_empty() => {
                VaultError::DecryptionFailed {
                    tokens: vec![token.to_owned()],
                }
            }
            other => other,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = VaultError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are a public contract: this table must only ever grow.
    #[test]
    fn every_code_is_pinned() {
        let pinned = [
            (ErrorCode::RecordNotFound, "RECORD_NOT_FOUND"),
            (ErrorCode::InvalidPassword, "INVALID_PASSWORD"),
            (ErrorCode::DecryptionFailed, "DECRYPTION_FAILED"),
            (ErrorCode::PasswordPolicy, "PASSWORD_POLICY"),
            (ErrorCode::InvalidArgument, "INVALID_ARGUMENT"),
            (ErrorCode::TokenExists, "TOKEN_EXISTS"),
            (ErrorCode::IdentityNotFound, "IDENTITY_NOT_FOUND"),
            (ErrorCode::IdentityDisabled, "IDENTITY_DISABLED"),
            (ErrorCode::QuotaExceeded, "QUOTA_EXCEEDED"),
            (ErrorCode::Storage, "STORAGE"),
            (ErrorCode::Aborted, "ABORTED"),
            (ErrorCode::Closed, "CLOSED"),
            (ErrorCode::SyncConflict, "SYNC_CONFLICT"),
        ];
        assert_eq!(pinned.len(), ErrorCode::ALL.len());
        for (code, text) in pinned {
            assert_eq!(code.as_str(), text);
        }
    }

    #[test]
    fn every_variant_maps_to_its_code() {
        let cases = [
            (
                VaultError::not_found(NotFoundReason::Expired, "tk_x"),
                "RECORD_NOT_FOUND",
            ),
            (
                VaultError::InvalidPassword { tokens: vec![] },
                "INVALID_PASSWORD",
            ),
            (
                VaultError::DecryptionFailed { tokens: vec![] },
                "DECRYPTION_FAILED",
            ),
            (VaultError::PasswordPolicy("x".into()), "PASSWORD_POLICY"),
            (VaultError::invalid("x"), "INVALID_ARGUMENT"),
            (VaultError::TokenExists("t".into()), "TOKEN_EXISTS"),
            (VaultError::IdentityNotFound, "IDENTITY_NOT_FOUND"),
            (VaultError::IdentityDisabled("x"), "IDENTITY_DISABLED"),
            (
                VaultError::QuotaExceeded(Box::new(StorageFailure {
                    name: None,
                    message: "x".into(),
                    original: Default::default(),
                })),
                "QUOTA_EXCEEDED",
            ),
            (VaultError::storage("x"), "STORAGE"),
            (VaultError::Aborted, "ABORTED"),
            (VaultError::Closed, "CLOSED"),
            (VaultError::SyncConflict("x".into()), "SYNC_CONFLICT"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code().as_str(), code, "{error}");
        }
    }

    #[test]
    fn messages_name_the_tokens_and_say_what_to_do() {
        let e = VaultError::RecordNotFound {
            reason: NotFoundReason::SoftDeleted,
            tokens: (0..7).map(|i| format!("tk_{i}")).collect(),
        };
        let m = e.to_string();
        assert!(m.contains("soft-deleted") && m.contains("7 records"), "{m}");
        assert!(!m.contains("tk_"), "the message never quotes a token: {m}");
        assert_eq!(e.tokens().map(<[String]>::len), Some(7));
        assert_eq!(e.reason().map(NotFoundReason::as_str), Some("soft_deleted"));
        let one = VaultError::not_found(NotFoundReason::Missing, "tk_secret-marker");
        assert_eq!(
            one.to_string(),
            "no record exists for this token or id (error.tokens holds it)"
        );
        // Without tokens (unlock() checking a secret, an identity's wrapped key) the message
        // names the vault, not a record nobody asked about.
        let unlock = VaultError::InvalidPassword { tokens: vec![] }.to_string();
        assert!(unlock.contains("does not open this vault"), "{unlock}");
        let key = VaultError::DecryptionFailed { tokens: vec![] }.to_string();
        assert!(key.contains("a key stored in this vault"), "{key}");
        for e in [
            VaultError::InvalidPassword {
                tokens: vec!["tk_a".into()],
            },
            VaultError::DecryptionFailed {
                tokens: vec!["tk_a".into()],
            },
        ] {
            let m = e.to_string();
            assert!(
                m.contains("the record (error.tokens holds its token)"),
                "{m}"
            );
        }
        let taken = VaultError::TokenExists("tk_secret-marker".into());
        assert!(!taken.to_string().contains("marker"), "{taken}");
        assert_eq!(taken.tokens(), Some(&["tk_secret-marker".to_owned()][..]));

        let e = VaultError::Storage(Box::new(StorageFailure {
            original: Default::default(),
            name: Some("DataError".into()),
            message: "bad key".into(),
        }));
        assert_eq!(e.to_string(), "storage failure (DataError): bad key");
        assert_eq!(e.cause_name(), Some("DataError"));
    }
}
