//! The `Vault` class JavaScript sees (wrapped by the TypeScript layer in `js/`).
//!
//! Every method clones the `Rc` of the vault in a synchronous prologue and returns a promise of
//! an `async move` block, so no `RefCell` borrow of the wasm object lives across an `.await`:
//! any number of concurrent calls on one `Vault` are fine, and so is `free()` while they run.

use super::convert::{self as js, JsResult, field, opt_bool, opt_int, opt_string, options};
use super::error::{err, invalid};
use super::platform::{JsRekeyObserver, TimerScheduler, WebCryptoKdf};
use super::query::query_from_value;
use crate::RekeyOptions;
use crate::platform::{Platform, SystemClock};
use crate::policy::PasswordPolicy;
use crate::storage::Storage;
use crate::vault::{CreateOptions, DEFAULT_KEY_CACHE_TTL_MS, Vault, VaultOptions};
use js_sys::{Function, Promise, Uint8Array};
use std::future::Future;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// An open vault. Use the TypeScript `Vault` class; this is its engine.
#[wasm_bindgen(js_name = Vault)]
pub struct JsVault {
    vault: Rc<Vault>,
}

/// Run an operation of the vault as a promise, turning `VaultError`s into JavaScript errors.
fn promise<F, T>(future: F, into_js: impl FnOnce(T) -> JsValue + 'static) -> Promise
where
    F: Future<Output = crate::Result<T>> + 'static,
    T: 'static,
{
    future_to_promise(async move { future.await.map(into_js).map_err(err) })
}

fn rejected(error: JsValue) -> Promise {
    Promise::reject(&error)
}

fn undefined<T>(_: T) -> JsValue {
    JsValue::UNDEFINED
}

fn create_options(value: &JsValue, with_length: bool) -> JsResult<CreateOptions> {
    let known: &[&str] = if with_length {
        &["length", "expiresAt"]
    } else {
        &["expiresAt"]
    };
    let o = options(value, "options", known)?;
    let length = if with_length {
        opt_int(
            &field(&o, "length"),
            "options.length",
            0.0,
            MAX_SAFE_INTEGER,
        )?
        .map(|n| n as usize)
    } else {
        None
    };
    Ok(CreateOptions {
        length,
        expires_at: js::opt_time(&field(&o, "expiresAt"), "options.expiresAt")?,
    })
}

fn policy(value: &JsValue) -> JsResult<PasswordPolicy> {
    let o = options(
        value,
        "passwordPolicy",
        &[
            "minLength",
            "requireLowercase",
            "requireUppercase",
            "requireNumbers",
            "requireSymbols",
            "allowEmpty",
        ],
    )?;
    let defaults = PasswordPolicy::default();
    let flag = |key: &str, default: bool| -> JsResult<bool> {
        Ok(opt_bool(&field(&o, key), &format!("passwordPolicy.{key}"))?.unwrap_or(default))
    };
    Ok(PasswordPolicy {
        min_length: opt_int(
            &field(&o, "minLength"),
            "passwordPolicy.minLength",
            0.0,
            4096.0,
        )?
        .map_or(defaults.min_length, |n| n as usize),
        require_lowercase: flag("requireLowercase", defaults.require_lowercase)?,
        require_uppercase: flag("requireUppercase", defaults.require_uppercase)?,
        require_numbers: flag("requireNumbers", defaults.require_numbers)?,
        require_symbols: flag("requireSymbols", defaults.require_symbols)?,
        allow_empty: flag("allowEmpty", defaults.allow_empty)?,
    })
}

/// The backends this build carries.
async fn open_storage(backend: &str, name: &str) -> JsResult<Box<dyn Storage>> {
    let _ = name;
    match backend {
        #[cfg(feature = "gluesql")]
        "memory" => crate::storage::memory::GlueMemoryStorage::new()
            .map(|s| Box::new(s) as Box<dyn Storage>)
            .map_err(|e| err(e.into())),
        #[cfg(not(feature = "gluesql"))]
        "memory" => Err(invalid("the \"memory\" backend is not part of this build")),
        #[cfg(feature = "idb")]
        "indexeddb" => crate::storage::indexeddb::IdbStorage::open(name)
            .await
            .map(|s| Box::new(s) as Box<dyn Storage>)
            .map_err(|e| err(e.into())),
        #[cfg(not(feature = "idb"))]
        "indexeddb" => Err(invalid(
            "the \"indexeddb\" backend is not part of this build",
        )),
        other => Err(invalid(format!(
            "backend must be \"indexeddb\" or \"memory\", got {other:?}"
        ))),
    }
}

#[wasm_bindgen(js_class = Vault)]
impl JsVault {
    /// Open (or create) a vault. `options.backend` must be given: the TypeScript layer picks the
    /// default for the runtime.
    #[wasm_bindgen(unchecked_return_type = "Promise<Vault>")]
    pub fn open(
        #[wasm_bindgen(unchecked_param_type = "VaultOptions | undefined")] options_value: JsValue,
    ) -> Promise {
        future_to_promise(async move { Self::open_native(options_value).await.map(JsValue::from) })
    }

    /// Wipe every cached key from memory now.
    pub fn lock(&self) {
        self.vault.lock();
    }

    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> Promise {
        let v = self.vault.clone();
        promise(
            async move {
                v.close().await;
                Ok(())
            },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = exportSnapshot, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn export_snapshot(&self) -> Promise {
        let v = self.vault.clone();
        promise(async move { v.export_snapshot().await }, |b: Vec<u8>| {
            js::bytes(&b)
        })
    }

    /// Master keys derived since the vault opened (a diagnostic for tests and benchmarks).
    #[wasm_bindgen(getter, js_name = keyDerivations)]
    pub fn key_derivations(&self) -> f64 {
        self.vault.key_derivations() as f64
    }

    // ---- tokens ----

    #[wasm_bindgen(js_name = tokenCreate, unchecked_return_type = "Promise<string>")]
    pub fn token_create(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] value: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CreateOptions | undefined")] options: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::string(&value, "value")?,
                js::secret(&password, "password")?,
                create_options(&options, true)?,
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((value, secret, o)) => promise(
                async move { v.token_create(&value, &secret, &o).await },
                |t: String| t.into(),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokensCreate, unchecked_return_type = "Promise<string[]>")]
    pub fn tokens_create(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] values: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CreateOptions | undefined")] options: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::strings(&values, "values")?,
                js::secret(&password, "password")?,
                create_options(&options, true)?,
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((values, secret, o)) => promise(
                async move {
                    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                    v.tokens_create(&refs, &secret, &o).await
                },
                |t: Vec<String>| js::string_array(&t),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokenCreateCustom, unchecked_return_type = "Promise<void>")]
    pub fn token_create_custom(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] value: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CustomCreateOptions | undefined")] options: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::string(&token, "token")?,
                js::string(&value, "value")?,
                js::secret(&password, "password")?,
                create_options(&options, false)?,
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((token, value, secret, o)) => promise(
                async move {
                    v.token_create_custom(&token, &value, &secret, o.expires_at)
                        .await
                },
                undefined,
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokenRead, unchecked_return_type = "Promise<string>")]
    pub fn token_read(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::string(&token, "token")?,
                js::secret(&password, "password")?,
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((token, secret)) => promise(
                async move { v.token_read(&token, &secret).await },
                |s: String| s.into(),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokensRead, unchecked_return_type = "Promise<Record<string, string>>")]
    pub fn tokens_read(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] tokens: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::strings(&tokens, "tokens")?,
                js::secret(&password, "password")?,
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((tokens, secret)) => promise(
                async move {
                    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
                    v.tokens_read(&refs, &secret).await
                },
                |pairs: Vec<(String, String)>| js::string_map(&pairs),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokensReadToResolvedMap, unchecked_return_type = "Promise<Record<string, string>>")]
    pub fn tokens_read_to_resolved_map(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Record<string, string>")] key_to_token: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::string_record(&key_to_token, "keyToToken")?,
                js::secret(&password, "password")?,
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((map, secret)) => promise(
                async move { v.tokens_read_to_resolved_map(&map, &secret).await },
                |pairs: Vec<(String, String)>| js::string_map(&pairs),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokenUpdate, unchecked_return_type = "Promise<void>")]
    pub fn token_update(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] value: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::string(&token, "token")?,
                js::string(&value, "value")?,
                js::secret(&password, "password")?,
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((token, value, secret)) => promise(
                async move { v.token_update(&token, &value, &secret).await },
                undefined,
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokenUpsert, unchecked_return_type = "Promise<string>")]
    pub fn token_upsert(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string | null | undefined")] existing: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] value: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CreateOptions | undefined")] options: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                opt_string(&existing, "existingToken")?,
                js::string(&value, "value")?,
                js::secret(&password, "password")?,
                create_options(&options, true)?,
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((existing, value, secret, o)) => promise(
                async move {
                    v.token_upsert(existing.as_deref(), &value, &secret, &o)
                        .await
                },
                |t: String| t.into(),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokenExists, unchecked_return_type = "Promise<boolean>")]
    pub fn token_exists(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        let v = self.vault.clone();
        match js::string(&token, "token") {
            Ok(token) => promise(
                async move { v.token_exists(&token).await },
                JsValue::from_bool,
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokenRenew, unchecked_return_type = "Promise<void>")]
    pub fn token_renew(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Time")] expires_at: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::string(&token, "token")?,
                js::opt_time(&expires_at, "expiresAt")?,
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((token, at)) => promise(async move { v.token_renew(&token, at).await }, undefined),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = tokenSoftDelete, unchecked_return_type = "Promise<void>")]
    pub fn token_soft_delete(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.with_token(token, |v, t| async move { v.token_soft_delete(&t).await })
    }

    #[wasm_bindgen(js_name = tokenRestore, unchecked_return_type = "Promise<void>")]
    pub fn token_restore(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.with_token(token, |v, t| async move { v.token_restore(&t).await })
    }

    #[wasm_bindgen(js_name = tokenDelete, unchecked_return_type = "Promise<void>")]
    pub fn token_delete(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.with_token(token, |v, t| async move { v.token_delete(&t).await })
    }

    #[wasm_bindgen(js_name = tokensExpiredSoftDelete, unchecked_return_type = "Promise<number>")]
    pub fn tokens_expired_soft_delete(&self) -> Promise {
        let v = self.vault.clone();
        promise(
            async move { v.tokens_expired_soft_delete().await },
            |n: u64| JsValue::from_f64(n as f64),
        )
    }

    #[wasm_bindgen(js_name = tokensExpiredDelete, unchecked_return_type = "Promise<number>")]
    pub fn tokens_expired_delete(&self) -> Promise {
        let v = self.vault.clone();
        promise(async move { v.tokens_expired_delete().await }, |n: u64| {
            JsValue::from_f64(n as f64)
        })
    }

    // ---- records ----

    #[wasm_bindgen(js_name = recordList, unchecked_return_type = "Promise<VaultRecord[]>")]
    pub fn record_list(
        &self,
        #[wasm_bindgen(unchecked_param_type = "QueryInit | undefined")] query: JsValue,
    ) -> Promise {
        let v = self.vault.clone();
        match query_from_value(&query) {
            Ok(q) => promise(
                async move { v.record_list(&q).await },
                |records: Vec<crate::Record>| {
                    records
                        .iter()
                        .map(js::record)
                        .collect::<js_sys::Array>()
                        .into()
                },
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = recordCount, unchecked_return_type = "Promise<number>")]
    pub fn record_count(
        &self,
        #[wasm_bindgen(unchecked_param_type = "QueryInit | undefined")] query: JsValue,
    ) -> Promise {
        let v = self.vault.clone();
        match query_from_value(&query) {
            Ok(q) => promise(async move { v.record_count(&q).await }, |n: u64| {
                JsValue::from_f64(n as f64)
            }),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = recordFindById, unchecked_return_type = "Promise<VaultRecord | null>")]
    pub fn record_find_by_id(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        let v = self.vault.clone();
        match js::string(&id, "id") {
            Ok(id) => promise(
                async move { v.record_find_by_id(&id).await },
                |r: Option<crate::Record>| r.as_ref().map_or(JsValue::NULL, js::record),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = recordFindByToken, unchecked_return_type = "Promise<VaultRecord | null>")]
    pub fn record_find_by_token(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        let v = self.vault.clone();
        match js::string(&token, "token") {
            Ok(token) => promise(
                async move { v.record_find_by_token(&token).await },
                |r: Option<crate::Record>| r.as_ref().map_or(JsValue::NULL, js::record),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = recordDeleteById, unchecked_return_type = "Promise<void>")]
    pub fn record_delete_by_id(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        self.with_id(id, |v, id| async move { v.record_delete_by_id(&id).await })
    }

    #[wasm_bindgen(js_name = recordDeleteByToken, unchecked_return_type = "Promise<void>")]
    pub fn record_delete_by_token(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.with_token(
            token,
            |v, t| async move { v.record_delete_by_token(&t).await },
        )
    }

    #[wasm_bindgen(js_name = recordSoftDeleteById, unchecked_return_type = "Promise<void>")]
    pub fn record_soft_delete_by_id(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        self.with_id(
            id,
            |v, id| async move { v.record_soft_delete_by_id(&id).await },
        )
    }

    #[wasm_bindgen(js_name = recordSoftDeleteByToken, unchecked_return_type = "Promise<void>")]
    pub fn record_soft_delete_by_token(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.with_token(token, |v, t| async move {
            v.record_soft_delete_by_token(&t).await
        })
    }

    // ---- identities ----

    #[wasm_bindgen(js_name = bulkRekey, unchecked_return_type = "Promise<number>")]
    pub fn bulk_rekey(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Secret")] old_password: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] new_password: JsValue,
        #[wasm_bindgen(unchecked_param_type = "RekeyOptions | undefined")] options_value: JsValue,
    ) -> Promise {
        let args = (|| {
            let o = options(
                &options_value,
                "options",
                &["rotate", "onProgress", "signal"],
            )?;
            let on_progress = field(&o, "onProgress");
            let on_progress = if on_progress.is_undefined() || on_progress.is_null() {
                None
            } else {
                Some(on_progress.dyn_into::<Function>().map_err(|v| {
                    invalid(format!(
                        "options.onProgress must be a function, got {}",
                        js::type_name(&v)
                    ))
                })?)
            };
            let signal = field(&o, "signal");
            let signal = if signal.is_undefined() || signal.is_null() {
                None
            } else {
                Some(signal.dyn_into::<web_sys::AbortSignal>().map_err(|v| {
                    invalid(format!(
                        "options.signal must be an AbortSignal, got {}",
                        js::type_name(&v)
                    ))
                })?)
            };
            Ok((
                js::secret(&old_password, "oldPassword")?,
                js::secret(&new_password, "newPassword")?,
                opt_bool(&field(&o, "rotate"), "options.rotate")?.unwrap_or(false),
                JsRekeyObserver {
                    on_progress,
                    signal,
                },
            ))
        })();
        let v = self.vault.clone();
        match args {
            Ok((old, new, rotate, observer)) => promise(
                async move {
                    if observer.signal.as_ref().is_some_and(|s| s.aborted()) {
                        return Err(crate::VaultError::Aborted);
                    }
                    v.bulk_rekey(
                        &old,
                        &new,
                        &RekeyOptions {
                            rotate,
                            observer: Some(&observer),
                        },
                    )
                    .await
                },
                |n: u64| JsValue::from_f64(n as f64),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = migrateRecordLinks, unchecked_return_type = "Promise<number>")]
    pub fn migrate_record_links(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
    ) -> Promise {
        let v = self.vault.clone();
        match js::secret(&password, "password") {
            Ok(secret) => promise(
                async move { v.migrate_record_links(&secret).await },
                |n: u64| JsValue::from_f64(n as f64),
            ),
            Err(e) => rejected(e),
        }
    }

    // ---- settings ----

    #[wasm_bindgen(js_name = getVaultSetting, unchecked_return_type = "Promise<string | null>")]
    pub fn get_vault_setting(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] key: JsValue,
    ) -> Promise {
        let v = self.vault.clone();
        match js::string(&key, "key") {
            Ok(key) => promise(
                async move { v.get_vault_setting(&key).await },
                |s: Option<String>| s.map_or(JsValue::NULL, JsValue::from),
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = setVaultSetting, unchecked_return_type = "Promise<void>")]
    pub fn set_vault_setting(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] key: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] value: JsValue,
    ) -> Promise {
        let args = (|| Ok((js::string(&key, "key")?, js::string(&value, "value")?)))();
        let v = self.vault.clone();
        match args {
            Ok((key, value)) => promise(
                async move { v.set_vault_setting(&key, &value).await },
                undefined,
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = getVaultVersion, unchecked_return_type = "Promise<string>")]
    pub fn get_vault_version(&self) -> Promise {
        let v = self.vault.clone();
        promise(async move { v.get_vault_version().await }, JsValue::from)
    }

    #[wasm_bindgen(js_name = setVaultVersion, unchecked_return_type = "Promise<void>")]
    pub fn set_vault_version(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] version: JsValue,
    ) -> Promise {
        let v = self.vault.clone();
        match js::string(&version, "version") {
            Ok(version) => promise(
                async move { v.set_vault_version(&version).await },
                undefined,
            ),
            Err(e) => rejected(e),
        }
    }

    #[wasm_bindgen(js_name = isVaultMigrated, unchecked_return_type = "Promise<boolean>")]
    pub fn is_vault_migrated(&self) -> Promise {
        let v = self.vault.clone();
        promise(
            async move { v.is_vault_migrated().await },
            JsValue::from_bool,
        )
    }

    #[wasm_bindgen(js_name = markVaultMigrated, unchecked_return_type = "Promise<void>")]
    pub fn mark_vault_migrated(&self) -> Promise {
        let v = self.vault.clone();
        promise(async move { v.mark_vault_migrated().await }, undefined)
    }
}

impl JsVault {
    /// `Vault.open` for Rust callers (the wasm tests).
    pub async fn open_native(options_value: JsValue) -> JsResult<JsVault> {
        super::install_panic_hook();
        let parsed = (|| -> JsResult<_> {
            let o = options(
                &options_value,
                "options",
                &[
                    "backend",
                    "name",
                    "passwordIdentity",
                    "kdfIterations",
                    "passwordPolicy",
                    "keyCacheTtlMs",
                    "snapshot",
                ],
            )?;
            let backend = opt_string(&field(&o, "backend"), "options.backend")?
                .unwrap_or_else(|| "memory".into());
            let name = opt_string(&field(&o, "name"), "options.name")?
                .unwrap_or_else(|| "vaultstore".into());
            if name.is_empty() {
                return Err(invalid("options.name must be a non-empty string"));
            }
            let snapshot = field(&o, "snapshot");
            let snapshot = if snapshot.is_undefined() || snapshot.is_null() {
                None
            } else if let Some(text) = snapshot.as_string() {
                Some(text.into_bytes())
            } else if let Some(bytes) = snapshot.dyn_ref::<Uint8Array>() {
                Some(bytes.to_vec())
            } else {
                return Err(invalid(format!(
                    "options.snapshot must be a Uint8Array or a string from exportSnapshot(), got {}",
                    js::type_name(&snapshot)
                )));
            };
            let vault_options = VaultOptions {
                password_identity: opt_bool(
                    &field(&o, "passwordIdentity"),
                    "options.passwordIdentity",
                )?
                .unwrap_or(false),
                kdf_iterations: opt_int(
                    &field(&o, "kdfIterations"),
                    "options.kdfIterations",
                    0.0,
                    MAX_SAFE_INTEGER,
                )?
                .map_or(crate::crypto::DEFAULT_ITERATIONS, |n| {
                    n.min(f64::from(u32::MAX)) as u32
                }),
                password_policy: policy(&field(&o, "passwordPolicy"))?,
                key_cache_ttl_ms: opt_int(
                    &field(&o, "keyCacheTtlMs"),
                    "options.keyCacheTtlMs",
                    0.0,
                    MAX_SAFE_INTEGER,
                )?
                .map_or(DEFAULT_KEY_CACHE_TTL_MS, |n| n as u64),
                snapshot,
            };
            Ok((backend, name, vault_options))
        })();
        let (backend, name, vault_options) = parsed?;
        // Opening storage and deriving nothing else: key derivation happens per call, outside
        // any storage transaction.
        let storage = open_storage(&backend, &name).await?;
        let platform = Platform {
            clock: Box::new(SystemClock),
            kdf: Box::new(WebCryptoKdf),
            scheduler: Box::new(TimerScheduler),
        };
        let vault = Vault::open_with(storage, vault_options, platform)
            .await
            .map_err(err)?;
        Ok(JsVault {
            vault: Rc::new(vault),
        })
    }

    fn with_token<F, Fut>(&self, token: JsValue, op: F) -> Promise
    where
        F: FnOnce(Rc<Vault>, String) -> Fut,
        Fut: Future<Output = crate::Result<()>> + 'static,
    {
        match js::string(&token, "token") {
            Ok(token) => promise(op(self.vault.clone(), token), undefined),
            Err(e) => rejected(e),
        }
    }

    fn with_id<F, Fut>(&self, id: JsValue, op: F) -> Promise
    where
        F: FnOnce(Rc<Vault>, String) -> Fut,
        Fut: Future<Output = crate::Result<()>> + 'static,
    {
        match js::string(&id, "id") {
            Ok(id) => promise(op(self.vault.clone(), id), undefined),
            Err(e) => rejected(e),
        }
    }
}
