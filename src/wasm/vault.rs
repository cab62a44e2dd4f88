//! The `Vault` class JavaScript sees (wrapped by the TypeScript layer in `js/`).
//!
//! Every method clones the `Rc` of the vault in a synchronous prologue and returns a promise of
//! an `async move` block, so no `RefCell` borrow of the wasm object lives across an `.await`:
//! any number of concurrent calls on one `Vault` are fine, and so is `free()` while they run.

use super::convert::{self as js, JsResult, field, opt_bool, opt_int, opt_string, options};
use super::error::{err, invalid};
use super::platform::{JsRekeyObserver, TimerScheduler, WebCryptoKdf};
use super::query::query_from_value;
use crate::platform::{Platform, SystemClock};
use crate::policy::PasswordPolicy;
use crate::storage::Storage;
use crate::vault::{CreateOptions, DEFAULT_KEY_CACHE_TTL_MS, Vault, VaultOptions};
use crate::{RekeyObserver, RekeyOptions};
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

// Result conversions shared by the bindings.
fn number(n: u64) -> JsValue {
    JsValue::from_f64(n as f64)
}

fn optional_record(r: Option<crate::Record>) -> JsValue {
    r.as_ref().map_or(JsValue::NULL, js::record)
}

fn record_list(records: Vec<crate::Record>) -> JsValue {
    records
        .iter()
        .map(js::record)
        .collect::<js_sys::Array>()
        .into()
}

fn string_map(pairs: Vec<(String, String)>) -> JsValue {
    js::string_map(&pairs)
}

fn rekey_observer(options_value: &JsValue) -> JsResult<(bool, JsRekeyObserver)> {
    let o = options(
        options_value,
        "options",
        &["rotate", "onProgress", "signal"],
    )?;
    let present = |v: JsValue| (!v.is_undefined() && !v.is_null()).then_some(v);
    let on_progress = present(field(&o, "onProgress"))
        .map(|f| {
            f.dyn_into::<Function>().map_err(|v| {
                invalid(format!(
                    "options.onProgress must be a function, got {}",
                    js::type_name(&v)
                ))
            })
        })
        .transpose()?;
    let signal = present(field(&o, "signal"))
        .map(|s| {
            s.dyn_into::<web_sys::AbortSignal>().map_err(|v| {
                invalid(format!(
                    "options.signal must be an AbortSignal, got {}",
                    js::type_name(&v)
                ))
            })
        })
        .transpose()?;
    let rotate = opt_bool(&field(&o, "rotate"), "options.rotate")?.unwrap_or(false);
    Ok((
        rotate,
        JsRekeyObserver {
            on_progress,
            signal,
        },
    ))
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
        self.run(
            Ok(()),
            |v, ()| async move {
                v.close().await;
                Ok(())
            },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = exportSnapshot, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn export_snapshot(&self) -> Promise {
        self.run(
            Ok(()),
            |v, ()| async move { v.export_snapshot().await },
            |b: Vec<u8>| js::bytes(&b),
        )
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
        self.run(
            args,
            |v, (value, secret, o)| async move { v.token_create(&value, &secret, &o).await },
            JsValue::from,
        )
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
        self.run(
            args,
            |v, (values, secret, o)| async move {
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                v.tokens_create(&refs, &secret, &o).await
            },
            |t: Vec<String>| js::string_array(&t),
        )
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
            let token = js::string(&token, "token")?;
            Ok((
                token,
                js::string(&value, "value")?,
                js::secret(&password, "password")?,
                create_options(&options, false)?,
            ))
        })();
        self.run(
            args,
            |v, (token, value, secret, o)| async move {
                v.token_create_custom(&token, &value, &secret, o.expires_at)
                    .await
            },
            undefined,
        )
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
        self.run(
            args,
            |v, (token, secret)| async move { v.token_read(&token, &secret).await },
            JsValue::from,
        )
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
        self.run(
            args,
            |v, (tokens, secret)| async move {
                let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
                v.tokens_read(&refs, &secret).await
            },
            string_map,
        )
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
        self.run(
            args,
            |v, (map, secret)| async move { v.tokens_read_to_resolved_map(&map, &secret).await },
            string_map,
        )
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
        self.run(args, |v, (token, value, secret)| async move { v.token_update(&token, &value, &secret).await }, undefined)
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
            let existing = opt_string(&existing, "existingToken")?;
            Ok((
                existing,
                js::string(&value, "value")?,
                js::secret(&password, "password")?,
                create_options(&options, true)?,
            ))
        })();
        self.run(
            args,
            |v, (existing, value, secret, o)| async move {
                v.token_upsert(existing.as_deref(), &value, &secret, &o)
                    .await
            },
            JsValue::from,
        )
    }

    #[wasm_bindgen(js_name = tokenExists, unchecked_return_type = "Promise<boolean>")]
    pub fn token_exists(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            js::string(&token, "token"),
            |v, t| async move { v.token_exists(&t).await },
            JsValue::from_bool,
        )
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
        self.run(
            args,
            |v, (token, at)| async move { v.token_renew(&token, at).await },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = tokenSoftDelete, unchecked_return_type = "Promise<void>")]
    pub fn token_soft_delete(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            js::string(&token, "token"),
            |v, t| async move { v.token_soft_delete(&t).await },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = tokenRestore, unchecked_return_type = "Promise<void>")]
    pub fn token_restore(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            js::string(&token, "token"),
            |v, t| async move { v.token_restore(&t).await },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = tokenDelete, unchecked_return_type = "Promise<void>")]
    pub fn token_delete(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            js::string(&token, "token"),
            |v, t| async move { v.token_delete(&t).await },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = tokensExpiredSoftDelete, unchecked_return_type = "Promise<number>")]
    pub fn tokens_expired_soft_delete(&self) -> Promise {
        self.run(
            Ok(()),
            |v, ()| async move { v.tokens_expired_soft_delete().await },
            number,
        )
    }

    #[wasm_bindgen(js_name = tokensExpiredDelete, unchecked_return_type = "Promise<number>")]
    pub fn tokens_expired_delete(&self) -> Promise {
        self.run(
            Ok(()),
            |v, ()| async move { v.tokens_expired_delete().await },
            number,
        )
    }

    // ---- records ----

    #[wasm_bindgen(js_name = recordList, unchecked_return_type = "Promise<VaultRecord[]>")]
    pub fn record_list(
        &self,
        #[wasm_bindgen(unchecked_param_type = "QueryInit | undefined")] query: JsValue,
    ) -> Promise {
        self.run(
            query_from_value(&query),
            |v, q| async move { v.record_list(&q).await },
            record_list,
        )
    }

    #[wasm_bindgen(js_name = recordCount, unchecked_return_type = "Promise<number>")]
    pub fn record_count(
        &self,
        #[wasm_bindgen(unchecked_param_type = "QueryInit | undefined")] query: JsValue,
    ) -> Promise {
        self.run(
            query_from_value(&query),
            |v, q| async move { v.record_count(&q).await },
            number,
        )
    }

    #[wasm_bindgen(js_name = recordFindById, unchecked_return_type = "Promise<VaultRecord | null>")]
    pub fn record_find_by_id(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        self.run(
            js::string(&id, "id"),
            |v, id| async move { v.record_find_by_id(&id).await },
            optional_record,
        )
    }

    #[wasm_bindgen(js_name = recordFindByToken, unchecked_return_type = "Promise<VaultRecord | null>")]
    pub fn record_find_by_token(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            js::string(&token, "token"),
            |v, t| async move { v.record_find_by_token(&t).await },
            optional_record,
        )
    }

    #[wasm_bindgen(js_name = recordDeleteById, unchecked_return_type = "Promise<void>")]
    pub fn record_delete_by_id(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        self.run(
            js::string(&id, "id"),
            |v, id| async move { v.record_delete_by_id(&id).await },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = recordDeleteByToken, unchecked_return_type = "Promise<void>")]
    pub fn record_delete_by_token(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            js::string(&token, "token"),
            |v, t| async move { v.record_delete_by_token(&t).await },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = recordSoftDeleteById, unchecked_return_type = "Promise<void>")]
    pub fn record_soft_delete_by_id(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        self.run(
            js::string(&id, "id"),
            |v, id| async move { v.record_soft_delete_by_id(&id).await },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = recordSoftDeleteByToken, unchecked_return_type = "Promise<void>")]
    pub fn record_soft_delete_by_token(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            js::string(&token, "token"),
            |v, t| async move { v.record_soft_delete_by_token(&t).await },
            undefined,
        )
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
            let (rotate, observer) = rekey_observer(&options_value)?;
            Ok((
                js::secret(&old_password, "oldPassword")?,
                js::secret(&new_password, "newPassword")?,
                rotate,
                observer,
            ))
        })();
        self.run(
            args,
            |v, (old, new, rotate, observer)| async move {
                if observer.is_cancelled() {
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
            number,
        )
    }

    #[wasm_bindgen(js_name = migrateRecordLinks, unchecked_return_type = "Promise<number>")]
    pub fn migrate_record_links(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
    ) -> Promise {
        self.run(
            js::secret(&password, "password"),
            |v, s| async move { v.migrate_record_links(&s).await },
            number,
        )
    }

    // ---- settings ----

    #[wasm_bindgen(js_name = getVaultSetting, unchecked_return_type = "Promise<string | null>")]
    pub fn get_vault_setting(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] key: JsValue,
    ) -> Promise {
        self.run(
            js::string(&key, "key"),
            |v, k| async move { v.get_vault_setting(&k).await },
            |s: Option<String>| s.map_or(JsValue::NULL, JsValue::from),
        )
    }

    #[wasm_bindgen(js_name = setVaultSetting, unchecked_return_type = "Promise<void>")]
    pub fn set_vault_setting(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] key: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] value: JsValue,
    ) -> Promise {
        let args = (|| Ok((js::string(&key, "key")?, js::string(&value, "value")?)))();
        self.run(
            args,
            |v, (key, value)| async move { v.set_vault_setting(&key, &value).await },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = getVaultVersion, unchecked_return_type = "Promise<string>")]
    pub fn get_vault_version(&self) -> Promise {
        self.run(
            Ok(()),
            |v, ()| async move { v.get_vault_version().await },
            JsValue::from,
        )
    }

    #[wasm_bindgen(js_name = setVaultVersion, unchecked_return_type = "Promise<void>")]
    pub fn set_vault_version(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] version: JsValue,
    ) -> Promise {
        self.run(
            js::string(&version, "version"),
            |v, ver| async move { v.set_vault_version(&ver).await },
            undefined,
        )
    }

    #[wasm_bindgen(js_name = isVaultMigrated, unchecked_return_type = "Promise<boolean>")]
    pub fn is_vault_migrated(&self) -> Promise {
        self.run(
            Ok(()),
            |v, ()| async move { v.is_vault_migrated().await },
            JsValue::from_bool,
        )
    }

    #[wasm_bindgen(js_name = markVaultMigrated, unchecked_return_type = "Promise<void>")]
    pub fn mark_vault_migrated(&self) -> Promise {
        self.run(
            Ok(()),
            |v, ()| async move { v.mark_vault_migrated().await },
            undefined,
        )
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

    /// The shape of every binding: arguments checked synchronously (a bad one rejects at once),
    /// then the operation on a clone of the `Rc`, so no borrow of `self` outlives this call.
    fn run<A, F, Fut, T>(
        &self,
        args: JsResult<A>,
        op: F,
        into_js: impl FnOnce(T) -> JsValue + 'static,
    ) -> Promise
    where
        F: FnOnce(Rc<Vault>, A) -> Fut,
        Fut: Future<Output = crate::Result<T>> + 'static,
        T: 'static,
    {
        match args {
            Ok(args) => promise(op(self.vault.clone(), args), into_js),
            Err(e) => rejected(e),
        }
    }
}
