//! The `Vault` class JavaScript sees (wrapped by the TypeScript layer in `js/`).
//!
//! Every method checks its arguments synchronously, clones the `Rc` of the vault and returns a
//! promise of an `async move` block, so no `RefCell` borrow of the wasm object lives across an
//! `.await`: any number of concurrent calls on one `Vault` are fine, and so is `free()` while
//! they run. Every method goes through [`JsVault::run`], which also reports the operation to the
//! `onEvent` listener (API.md "Events") with its name, duration, record count and outcome code,
//! and never anything a caller passed.

use super::convert::{
    self as js, JsResult, MAX_SETTING_UNITS, field, opt_bool, opt_int, opt_string, options,
};
use super::error::{err, invalid};
use super::platform::{JsRekeyObserver, TimerScheduler, WebCryptoKdf, now_ms};
use super::query::query_from_value;
use super::sync::{SyncArgs, report as sync_report, sync_args};
use crate::platform::{Platform, SystemClock};
use crate::policy::PasswordPolicy;
use crate::storage::Storage;
use crate::vault::{CreateOptions, DEFAULT_KEY_CACHE_TTL_MS, Vault, VaultOptions};
use crate::{RekeyObserver, RekeyOptions};
use js_sys::{Function, Object, Promise, Uint8Array};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// An open vault. Use the TypeScript `Vault` class; this is its engine.
#[wasm_bindgen(js_name = Vault)]
pub struct JsVault {
    vault: Rc<Vault>,
    events: Events,
}

/// The `onEvent` listener, if any.
#[derive(Clone, Default)]
struct Events(Option<Function>);

impl Events {
    /// When an operation starts, for its event's `durationMs`: read only when there is a
    /// listener to tell (reading the clock is three calls into JavaScript).
    fn clock(&self) -> f64 {
        if self.0.is_some() { now_ms() } else { 0.0 }
    }

    /// Report one operation. The event carries no value, secret, key or token; a listener that
    /// throws is ignored (`Function.call` catches), so it can never change the outcome.
    fn emit(&self, op: &str, started: f64, records: u64, code: &str) {
        let Some(listener) = &self.0 else { return };
        let event = Object::new();
        js::set(&event, "op", &JsValue::from_str(op));
        js::set(
            &event,
            "durationMs",
            &JsValue::from_f64((now_ms() - started).max(0.0)),
        );
        js::set(&event, "records", &JsValue::from_f64(records as f64));
        js::set(&event, "code", &JsValue::from_str(code));
        let _ = listener.call1(&JsValue::UNDEFINED, &event);
    }

    fn emit_error(&self, op: &str, started: f64, error: &JsValue) {
        if self.0.is_some() {
            let code = js_sys::Reflect::get(error, &JsValue::from_str("code"))
                .ok()
                .and_then(|c| c.as_string())
                .unwrap_or_else(|| "STORAGE".into());
            self.emit(op, started, 0, &code);
        }
    }
}

fn undefined<T>(_: T) -> JsValue {
    JsValue::UNDEFINED
}

// How many records an operation read or wrote, from its result.
fn none<T>(_: &T) -> u64 {
    0
}
fn one<T>(_: &T) -> u64 {
    1
}
#[allow(clippy::ptr_arg)] // called as `fn(&T) -> u64` with `T = Vec<_>`
fn len<T>(v: &Vec<T>) -> u64 {
    v.len() as u64
}
fn deleted(d: &bool) -> u64 {
    u64::from(*d)
}
fn count(n: &u64) -> u64 {
    *n
}
fn found<T>(r: &Option<T>) -> u64 {
    u64::from(r.is_some())
}

fn create_options(value: &JsValue, with_length: bool) -> JsResult<CreateOptions> {
    let known: &[&str] = if with_length {
        &["length", "expiresAt"]
    } else {
        &["expiresAt"]
    };
    let o = options(value, "options", known)?;
    let length = if with_length {
        // The range the vault enforces, so a wrong type or fraction is told the real limits.
        opt_int(
            &field(&o, "length"),
            "options.length",
            crate::token::MIN_TOKEN_LEN as u64,
            crate::token::MAX_TOKEN_LEN as u64,
        )?
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
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
        min_length: opt_int(&field(&o, "minLength"), "passwordPolicy.minLength", 0, 4096)?
            .map_or(defaults.min_length, |n| n as usize),
        require_lowercase: flag("requireLowercase", defaults.require_lowercase)?,
        require_uppercase: flag("requireUppercase", defaults.require_uppercase)?,
        require_numbers: flag("requireNumbers", defaults.require_numbers)?,
        require_symbols: flag("requireSymbols", defaults.require_symbols)?,
        allow_empty: flag("allowEmpty", defaults.allow_empty)?,
    })
}

/// The backends this build carries. `name` is the IndexedDB database or the SQL namespace.
async fn open_storage(backend: &str, name: &str, sql: &JsValue) -> JsResult<Box<dyn Storage>> {
    let _ = (name, sql);
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
        #[cfg(feature = "sql")]
        "sql" => {
            let executor = super::sql::JsSqlExecutor::from_js(sql, "options.sql")?;
            crate::storage::sql::SqlStorage::open(executor, name)
                .await
                .map(|s| Box::new(s) as Box<dyn Storage>)
                .map_err(|e| err(e.into()))
        }
        #[cfg(not(feature = "sql"))]
        "sql" => Err(invalid("the \"sql\" backend is not part of this build")),
        _ => Err(invalid(
            "backend must be \"indexeddb\", \"memory\" or \"sql\"",
        )),
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

/// An optional listener function.
fn rekey_observer(options_value: &JsValue) -> JsResult<(bool, JsRekeyObserver)> {
    let o = options(
        options_value,
        "options",
        &["rotate", "onProgress", "signal"],
    )?;
    let on_progress = js::opt_function(field(&o, "onProgress"), "options.onProgress")?;
    let signal = js::opt_signal(field(&o, "signal"), "options.signal")?;
    let rotate = opt_bool(&field(&o, "rotate"), "options.rotate")?.unwrap_or(false);
    Ok((
        rotate,
        JsRekeyObserver {
            on_progress,
            signal,
        },
    ))
}

fn truth(b: &bool) -> u64 {
    u64::from(*b)
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
        let started = self.events.clock();
        self.vault.lock();
        super::scrub_stack();
        self.events.emit("lock", started, 0, "OK");
    }

    /// Derive and cache `secret`'s key, checked against what is stored: `true` when it opens an
    /// identity or a record, `false` when nothing is stored yet, else `INVALID_PASSWORD`. The
    /// event counts the records whose key check was computed.
    #[wasm_bindgen(unchecked_return_type = "Promise<boolean>")]
    pub fn unlock(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Secret")] secret: JsValue,
    ) -> Promise {
        self.run(
            "unlock",
            js::secret(&secret, "secret"),
            |v, s| async move { v.unlock_counted(&s).await },
            |(opens, _): (bool, u64)| JsValue::from_bool(opens),
            |(_, checked)| *checked,
        )
    }

    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> Promise {
        self.run(
            "close",
            Ok(()),
            |v, ()| async move {
                v.close().await;
                Ok(())
            },
            undefined,
            none,
        )
    }

    #[wasm_bindgen(js_name = exportSnapshot, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn export_snapshot(&self) -> Promise {
        self.run(
            "exportSnapshot",
            Ok(()),
            |v, ()| async move { v.export_snapshot_counted().await },
            |(bytes, _): (Vec<u8>, u64)| js::bytes(&bytes),
            |(_, n)| *n,
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
                js::value(&value, "value")?,
                js::secret(&password, "password")?,
                create_options(&options, true)?,
            ))
        })();
        self.run(
            "tokenCreate",
            args,
            |v, (value, secret, o)| async move { v.token_create(&value, &secret, &o).await },
            JsValue::from,
            one,
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
                js::values(&values, "values")?,
                js::secret(&password, "password")?,
                create_options(&options, true)?,
            ))
        })();
        self.run(
            "tokensCreate",
            args,
            |v, (values, secret, o)| async move {
                let refs: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
                v.tokens_create(&refs, &secret, &o).await
            },
            |t: Vec<String>| js::string_array(&t),
            len,
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
            Ok((
                js::string(&token, "token")?,
                js::value(&value, "value")?,
                js::secret(&password, "password")?,
                create_options(&options, false)?,
            ))
        })();
        self.run(
            "tokenCreateCustom",
            args,
            |v, (token, value, secret, o)| async move {
                v.token_create_custom(&token, &value, &secret, o.expires_at)
                    .await
            },
            undefined,
            one,
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
            "tokenRead",
            args,
            |v, (token, secret)| async move { v.token_read(&token, &secret).await },
            js::plaintext,
            one,
        )
    }

    #[wasm_bindgen(js_name = tokensRead, unchecked_return_type = "Promise<(string | Uint32Array)[]>")]
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
            "tokensRead",
            args,
            |v, (tokens, secret)| async move {
                let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
                v.tokens_read(&refs, &secret).await
            },
            js::string_pairs,
            len,
        )
    }

    #[wasm_bindgen(js_name = tokensReadToResolvedMap, unchecked_return_type = "Promise<(string | Uint32Array)[]>")]
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
            "tokensReadToResolvedMap",
            args,
            |v, (map, secret)| async move { v.tokens_read_to_resolved_map(&map, &secret).await },
            js::string_pairs,
            len,
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
                js::value(&value, "value")?,
                js::secret(&password, "password")?,
            ))
        })();
        self.run(
            "tokenUpdate",
            args,
            |v, (token, value, secret)| async move {
                v.token_update(&token, &value, &secret).await
            },
            undefined,
            one,
        )
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
                js::value(&value, "value")?,
                js::secret(&password, "password")?,
                create_options(&options, true)?,
            ))
        })();
        self.run(
            "tokenUpsert",
            args,
            |v, (existing, value, secret, o)| async move {
                v.token_upsert(existing.as_deref(), &value, &secret, &o)
                    .await
            },
            JsValue::from,
            one,
        )
    }

    #[wasm_bindgen(js_name = tokenExists, unchecked_return_type = "Promise<boolean>")]
    pub fn token_exists(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            "tokenExists",
            js::string(&token, "token"),
            |v, t| async move { v.token_exists(&t).await },
            JsValue::from_bool,
            truth,
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
                js::time_or_null(&expires_at, "expiresAt")?,
            ))
        })();
        self.run(
            "tokenRenew",
            args,
            |v, (token, at)| async move { v.token_renew(&token, at).await },
            undefined,
            one,
        )
    }

    #[wasm_bindgen(js_name = tokenSoftDelete, unchecked_return_type = "Promise<void>")]
    pub fn token_soft_delete(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            "tokenSoftDelete",
            js::string(&token, "token"),
            |v, t| async move { v.token_soft_delete(&t).await },
            undefined,
            one,
        )
    }

    #[wasm_bindgen(js_name = tokenRestore, unchecked_return_type = "Promise<void>")]
    pub fn token_restore(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            "tokenRestore",
            js::string(&token, "token"),
            |v, t| async move { v.token_restore(&t).await },
            undefined,
            one,
        )
    }

    #[wasm_bindgen(js_name = tokenDelete, unchecked_return_type = "Promise<void>")]
    pub fn token_delete(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            "tokenDelete",
            js::string(&token, "token"),
            |v, t| async move { v.token_delete(&t).await },
            undefined,
            deleted,
        )
    }

    #[wasm_bindgen(js_name = tokensExpiredSoftDelete, unchecked_return_type = "Promise<number>")]
    pub fn tokens_expired_soft_delete(&self) -> Promise {
        self.run(
            "tokensExpiredSoftDelete",
            Ok(()),
            |v, ()| async move { v.tokens_expired_soft_delete().await },
            number,
            count,
        )
    }

    #[wasm_bindgen(js_name = tokensExpiredDelete, unchecked_return_type = "Promise<number>")]
    pub fn tokens_expired_delete(&self) -> Promise {
        self.run(
            "tokensExpiredDelete",
            Ok(()),
            |v, ()| async move { v.tokens_expired_delete().await },
            number,
            count,
        )
    }

    // ---- records ----

    #[wasm_bindgen(js_name = recordList, unchecked_return_type = "Promise<VaultRecord[]>")]
    pub fn record_list(
        &self,
        #[wasm_bindgen(unchecked_param_type = "QueryInit | undefined")] query: JsValue,
    ) -> Promise {
        self.run(
            "recordList",
            query_from_value(&query),
            |v, q| async move { v.record_list(&q).await },
            record_list,
            len,
        )
    }

    #[wasm_bindgen(js_name = recordCount, unchecked_return_type = "Promise<number>")]
    pub fn record_count(
        &self,
        #[wasm_bindgen(unchecked_param_type = "QueryInit | undefined")] query: JsValue,
    ) -> Promise {
        self.run(
            "recordCount",
            query_from_value(&query),
            |v, q| async move { v.record_count(&q).await },
            number,
            count,
        )
    }

    #[wasm_bindgen(js_name = recordFindById, unchecked_return_type = "Promise<VaultRecord | null>")]
    pub fn record_find_by_id(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        self.run(
            "recordFindById",
            js::string(&id, "id"),
            |v, id| async move { v.record_find_by_id(&id).await },
            optional_record,
            found,
        )
    }

    #[wasm_bindgen(js_name = recordFindByToken, unchecked_return_type = "Promise<VaultRecord | null>")]
    pub fn record_find_by_token(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            "recordFindByToken",
            js::string(&token, "token"),
            |v, t| async move { v.record_find_by_token(&t).await },
            optional_record,
            found,
        )
    }

    #[wasm_bindgen(js_name = recordDeleteById, unchecked_return_type = "Promise<void>")]
    pub fn record_delete_by_id(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        self.run(
            "recordDeleteById",
            js::string(&id, "id"),
            |v, id| async move { v.record_delete_by_id(&id).await },
            undefined,
            one,
        )
    }

    #[wasm_bindgen(js_name = recordDeleteByToken, unchecked_return_type = "Promise<void>")]
    pub fn record_delete_by_token(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            "recordDeleteByToken",
            js::string(&token, "token"),
            |v, t| async move { v.record_delete_by_token(&t).await },
            undefined,
            deleted,
        )
    }

    #[wasm_bindgen(js_name = recordSoftDeleteById, unchecked_return_type = "Promise<void>")]
    pub fn record_soft_delete_by_id(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        self.run(
            "recordSoftDeleteById",
            js::string(&id, "id"),
            |v, id| async move { v.record_soft_delete_by_id(&id).await },
            undefined,
            one,
        )
    }

    #[wasm_bindgen(js_name = recordSoftDeleteByToken, unchecked_return_type = "Promise<void>")]
    pub fn record_soft_delete_by_token(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Promise {
        self.run(
            "recordSoftDeleteByToken",
            js::string(&token, "token"),
            |v, t| async move { v.record_soft_delete_by_token(&t).await },
            undefined,
            one,
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
            "bulkRekey",
            args,
            |v, (old, new, rotate, observer)| async move {
                v.ensure_open()?;
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
            count,
        )
    }

    /// Wrap the data key of `existing`'s identity under `added` too (API.md "Unlocking, and
    /// several secrets for one identity").
    #[wasm_bindgen(js_name = secretAdd, unchecked_return_type = "Promise<void>")]
    pub fn secret_add(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Secret")] existing: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Secret")] added: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::secret(&existing, "existing")?,
                js::secret(&added, "added")?,
            ))
        })();
        self.run(
            "secretAdd",
            args,
            |v, (existing, added)| async move { v.secret_add(&existing, &added).await },
            undefined,
            none,
        )
    }

    /// Forget one of an identity's secrets; never the last one of an identity with records.
    #[wasm_bindgen(js_name = secretRemove, unchecked_return_type = "Promise<void>")]
    pub fn secret_remove(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Secret")] secret: JsValue,
    ) -> Promise {
        self.run(
            "secretRemove",
            js::secret(&secret, "secret"),
            |v, s| async move { v.secret_remove(&s).await },
            undefined,
            none,
        )
    }

    #[wasm_bindgen(js_name = migrateRecordLinks, unchecked_return_type = "Promise<number>")]
    pub fn migrate_record_links(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Secret")] password: JsValue,
    ) -> Promise {
        self.run(
            "migrateRecordLinks",
            js::secret(&password, "password"),
            |v, s| async move { v.migrate_record_links(&s).await },
            number,
            count,
        )
    }

    // ---- settings ----

    #[wasm_bindgen(js_name = getVaultSetting, unchecked_return_type = "Promise<string | null>")]
    pub fn get_vault_setting(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] key: JsValue,
    ) -> Promise {
        self.run(
            "getVaultSetting",
            js::string(&key, "key"),
            |v, k| async move { v.get_vault_setting(&k).await },
            |s: Option<String>| s.map_or(JsValue::NULL, JsValue::from),
            none,
        )
    }

    #[wasm_bindgen(js_name = setVaultSetting, unchecked_return_type = "Promise<void>")]
    pub fn set_vault_setting(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] key: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] value: JsValue,
    ) -> Promise {
        let args = (|| {
            Ok((
                js::string(&key, "key")?,
                js::text(&value, "value", MAX_SETTING_UNITS)?,
            ))
        })();
        self.run(
            "setVaultSetting",
            args,
            |v, (key, value)| async move { v.set_vault_setting(&key, &value).await },
            undefined,
            none,
        )
    }

    #[wasm_bindgen(js_name = getVaultVersion, unchecked_return_type = "Promise<string>")]
    pub fn get_vault_version(&self) -> Promise {
        self.run(
            "getVaultVersion",
            Ok(()),
            |v, ()| async move { v.get_vault_version().await },
            JsValue::from,
            none,
        )
    }

    #[wasm_bindgen(js_name = setVaultVersion, unchecked_return_type = "Promise<void>")]
    pub fn set_vault_version(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] version: JsValue,
    ) -> Promise {
        self.run(
            "setVaultVersion",
            js::text(&version, "version", MAX_SETTING_UNITS),
            |v, ver| async move { v.set_vault_version(&ver).await },
            undefined,
            none,
        )
    }

    #[wasm_bindgen(js_name = isVaultMigrated, unchecked_return_type = "Promise<boolean>")]
    pub fn is_vault_migrated(&self) -> Promise {
        self.run(
            "isVaultMigrated",
            Ok(()),
            |v, ()| async move { v.is_vault_migrated().await },
            JsValue::from_bool,
            none,
        )
    }

    #[wasm_bindgen(js_name = markVaultMigrated, unchecked_return_type = "Promise<void>")]
    pub fn mark_vault_migrated(&self) -> Promise {
        self.run(
            "markVaultMigrated",
            Ok(()),
            |v, ()| async move { v.mark_vault_migrated().await },
            undefined,
            none,
        )
    }

    // ---- sync (SYNC.md "API") ----

    /// Sync with a server. The TypeScript layer turns the `SyncRemote` into `exchange`, one
    /// function `(body: string) => Promise<{ status: number, body: Uint8Array }>`; `options` is
    /// `{ signal, onProgress }`. A failed exchange is `STORAGE` with what it threw as `cause`;
    /// an aborted signal is `ABORTED` at the next exchange.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncReport>")]
    pub fn sync(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "(body: string) => Promise<{ status: number; body: Uint8Array | null; tooLarge?: boolean }>"
        )]
        exchange: JsValue,
        #[wasm_bindgen(unchecked_param_type = "SyncOptions | undefined")] options_value: JsValue,
    ) -> Promise {
        let started = self.events.clock();
        let events = self.events.clone();
        let SyncArgs {
            transport,
            on_progress,
        } = match sync_args(exchange, &options_value) {
            Ok(args) => args,
            Err(e) => {
                let e = self.closed_or(e);
                events.emit_error("sync", started, &e);
                return Promise::reject(&e);
            }
        };
        let vault = self.vault.clone();
        future_to_promise(async move {
            // A throwing progress listener must not break the sync; its error is dropped.
            let progress = on_progress.map(|f| {
                move |done: u64, total: u64| {
                    let _ = f.call2(
                        &JsValue::UNDEFINED,
                        &JsValue::from_f64(done as f64),
                        &JsValue::from_f64(total as f64),
                    );
                }
            });
            let outcome = vault
                .sync(
                    &transport,
                    progress.as_ref().map(|p| p as &dyn Fn(u64, u64)),
                )
                .await;
            super::scrub_stack();
            match outcome {
                Ok(report) => {
                    events.emit("sync", started, report.pulled + report.pushed, "OK");
                    Ok(sync_report(&report))
                }
                Err(e) => {
                    events.emit("sync", started, 0, e.code().as_str());
                    let network = matches!(e, crate::VaultError::Storage(_));
                    let error = err(e);
                    // A failed exchange ends the sync at once: its error is this one's cause.
                    if let Some(cause) = transport.take_failure().filter(|_| network) {
                        js::set(&error, "cause", &cause);
                    }
                    Err(error)
                }
            }
        })
    }

    /// The largest sync request or response body, in bytes (4 MiB).
    #[wasm_bindgen(js_name = syncBodyLimit)]
    pub fn sync_body_limit() -> f64 {
        crate::sync::wire::MAX_BODY_BYTES as f64
    }
}

/// The server side of sync. Only in the engine with a server backend (memory, SQL): the browser's
/// IndexedDB-only engine syncs as a replica and leaves the server's code out (its download budget).
#[cfg(any(feature = "gluesql", feature = "sql"))]
#[wasm_bindgen(js_class = Vault)]
impl JsVault {
    /// The server side: answer one request body (read by the TypeScript layer after
    /// [`JsVault::sync_refusal`]) as `[status, JSON body]`. Needs no secret. Rejects with
    /// `CLOSED` once the vault is closed, as every call does (API.md), and with
    /// `INVALID_ARGUMENT` without a body (the TypeScript layer passes none for a value that is
    /// not a `Request`); every outcome reaches the `onEvent` listener.
    #[wasm_bindgen(js_name = syncHandle, unchecked_return_type = "Promise<[number, string]>")]
    pub fn sync_handle(&self, body: Option<Vec<u8>>) -> Promise {
        let started = self.events.clock();
        let events = self.events.clone();
        let vault = self.vault.clone();
        let refused = if vault.is_closed() {
            Some(err(crate::VaultError::Closed))
        } else if body.is_none() {
            Some(invalid("syncHandle takes a Request"))
        } else {
            None
        };
        if let Some(refused) = refused {
            events.emit_error("syncHandle", started, &refused);
            return Promise::reject(&refused);
        }
        let body = body.unwrap_or_default();
        future_to_promise(async move {
            let (status, answer, rows) = vault.sync_handle_counted(&body).await;
            drop(body);
            super::scrub_stack();
            events.emit("syncHandle", started, rows, &refusal_code(status, &answer));
            Ok(super::sync::answer(status, &answer))
        })
    }

    /// Whether `close()` has run: the TypeScript layer's own checks of a sync request come
    /// after it (a closed vault rejects with `CLOSED`, whatever the request).
    #[wasm_bindgen(getter)]
    pub fn closed(&self) -> bool {
        self.vault.is_closed()
    }

    /// Whether a sync request is refused before its body is read: `[status, JSON body]` for a
    /// method other than `POST` (405), a content type other than JSON (415) or a body over
    /// [`Vault.syncBodyLimit`] bytes, declared or read so far (413), or a body whose read failed
    /// (`unreadable`, 400), reported to the `onEvent` listener as a `syncHandle` with the
    /// refusal's code; `undefined` otherwise.
    #[wasm_bindgen(js_name = syncRefusal, unchecked_return_type = "[number, string] | undefined")]
    pub fn sync_refusal(
        &self,
        method: &str,
        content_type: Option<String>,
        length: Option<f64>,
        unreadable: Option<bool>,
    ) -> JsValue {
        let started = self.events.clock();
        let unreadable = unreadable.unwrap_or(false);
        match super::sync::refusal(method, content_type.as_deref(), length, unreadable) {
            Some(e) => {
                let answer = crate::sync::wire::encode_error(&e);
                self.events
                    .emit("syncHandle", started, 0, &refusal_code(e.status(), &answer));
                super::sync::answer(e.status(), &answer)
            }
            None => JsValue::UNDEFINED,
        }
    }
}

/// The code a `syncHandle` answer reports to `onEvent`: `OK`, or its error body's code, so that
/// a server's monitoring sees refused syncs.
#[cfg(any(feature = "gluesql", feature = "sql"))]
fn refusal_code(status: u16, answer: &str) -> String {
    if status == 200 {
        "OK".to_owned()
    } else {
        crate::sync::wire::decode_error(answer.as_bytes())
            .map_or_else(|| "STORAGE".to_owned(), |e| e.code)
    }
}

/// The browser's IndexedDB engine leaves the server side of sync out (its download budget).
#[cfg(not(any(feature = "gluesql", feature = "sql")))]
#[wasm_bindgen(js_class = Vault)]
impl JsVault {
    /// Refuse a sync request, as every call is refused and reported to the `onEvent` listener:
    /// `CLOSED` once the vault is closed, else `UNSUPPORTED`.
    #[wasm_bindgen(js_name = syncHandle, unchecked_return_type = "Promise<[number, string]>")]
    pub fn sync_handle(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Uint8Array | undefined")] _body: JsValue,
    ) -> Promise {
        let started = self.events.clock();
        let refused = if self.vault.is_closed() {
            err(crate::VaultError::Closed)
        } else {
            // Built here rather than through `to_js`: `UNSUPPORTED` is no `VaultError` variant
            // of the engine (its only other use is the TypeScript layer's passkeys).
            let e: JsValue = js_sys::Error::new(
                "the browser's IndexedDB engine has no syncHandle (the server side of sync): answer sync requests in a worker, on Node or from a vault opened with backend \"memory\" or \"sql\"",
            )
            .into();
            js::set(&e, "name", &JsValue::from_str("VaultError"));
            js::set(&e, "code", &JsValue::from_str("UNSUPPORTED"));
            e
        };
        self.events.emit_error("syncHandle", started, &refused);
        Promise::reject(&refused)
    }
}

/// What an operation gave: the records it read or wrote and its result, or its error.
type Outcome = crate::Result<(u64, JsValue)>;

/// The promise of `operation`, settled at once when its first poll finishes it. An operation
/// that never waits (every one on the memory backend) then skips `future_to_promise`'s task,
/// microtask and two closures: about a seventh of a `tokenRead` in Node. One that waits is
/// handed to `future_to_promise`, whose first poll passes the real waker (a future keeps the
/// waker of its latest poll, so the no-op one here is never the one woken).
fn settle(mut operation: Pin<Box<dyn Future<Output = JsResult<JsValue>>>>) -> Promise {
    let mut cx = Context::from_waker(Waker::noop());
    match operation.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(value)) => Promise::resolve(&value),
        Poll::Ready(Err(error)) => Promise::reject(&error),
        Poll::Pending => future_to_promise(operation),
    }
}

/// Await an operation, then wipe the stack it used and report it to the `onEvent` listener.
async fn finish(
    op: &'static str,
    started: f64,
    events: Events,
    outcome: Pin<Box<dyn Future<Output = Outcome>>>,
) -> JsResult<JsValue> {
    let outcome = outcome.await;
    super::scrub_stack();
    match outcome {
        Ok((records, result)) => {
            events.emit(op, started, records, "OK");
            Ok(result)
        }
        Err(e) => {
            events.emit(op, started, 0, e.code().as_str());
            Err(err(e))
        }
    }
}

/// What `Vault.open` was asked for.
struct OpenRequest {
    backend: String,
    name: String,
    /// The SQL executor (`backend: "sql"` only).
    sql: JsValue,
    options: VaultOptions,
    events: Events,
}

fn open_request(options_value: &JsValue) -> JsResult<OpenRequest> {
    let o = options(
        options_value,
        "options",
        &[
            "backend",
            "name",
            "passwordIdentity",
            "kdfIterations",
            "minKdfIterations",
            "passwordPolicy",
            "keyCacheTtlMs",
            "onEvent",
            "snapshot",
            "sql",
        ],
    )?;
    let events = Events(js::opt_function(field(&o, "onEvent"), "options.onEvent")?);
    let backend =
        opt_string(&field(&o, "backend"), "options.backend")?.unwrap_or_else(|| "memory".into());
    let name =
        opt_string(&field(&o, "name"), "options.name")?.unwrap_or_else(|| "vaultstore".into());
    if name.is_empty() {
        return Err(invalid("options.name must be a non-empty string"));
    }
    // API.md: `sql` is required with backend "sql" and refused otherwise.
    let sql = field(&o, "sql");
    match (backend.as_str(), sql.is_undefined() || sql.is_null()) {
        ("sql", true) => {
            return Err(invalid(
                "options.sql is required with backend \"sql\": pass d1(env.DB), durableObject(ctx.storage), libsql(client) or an executor of your own",
            ));
        }
        ("sql", false) => {}
        (_, false) => {
            return Err(invalid(
                "options.sql only applies to backend \"sql\"; remove it or set backend: \"sql\"",
            ));
        }
        (_, true) => {}
    }
    let snapshot = snapshot_bytes(&field(&o, "snapshot"))?;
    let iterations = |key: &str| -> JsResult<Option<u32>> {
        Ok(opt_int(
            &field(&o, key),
            &format!("options.{key}"),
            u64::from(crate::crypto::MIN_ITERATIONS),
            u64::from(crate::crypto::MAX_ITERATIONS),
        )?
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    };
    let options = VaultOptions {
        password_identity: opt_bool(&field(&o, "passwordIdentity"), "options.passwordIdentity")?
            .unwrap_or(false),
        kdf_iterations: iterations("kdfIterations")?.unwrap_or(crate::crypto::DEFAULT_ITERATIONS),
        min_kdf_iterations: iterations("minKdfIterations")?,
        password_policy: policy(&field(&o, "passwordPolicy"))?,
        key_cache_ttl_ms: opt_int(
            &field(&o, "keyCacheTtlMs"),
            "options.keyCacheTtlMs",
            0,
            MAX_SAFE_INTEGER,
        )?
        .unwrap_or(DEFAULT_KEY_CACHE_TTL_MS),
        snapshot,
    };
    Ok(OpenRequest {
        backend,
        name,
        sql,
        options,
        events,
    })
}

/// `options.snapshot`: bytes or the text of `exportSnapshot()`, its size checked before a byte
/// is copied into wasm memory.
fn snapshot_bytes(value: &JsValue) -> JsResult<Option<Vec<u8>>> {
    let max = crate::snapshot::MAX_SNAPSHOT_BYTES;
    let too_large = || invalid(format!("options.snapshot is larger than {} MiB", max >> 20));
    if value.is_undefined() || value.is_null() {
        Ok(None)
    } else if value.is_string() {
        // Each UTF-16 unit is at least one UTF-8 byte.
        js::text(
            value,
            "options.snapshot",
            u32::try_from(max).unwrap_or(u32::MAX),
        )
        .map(|t| Some(t.into_bytes()))
        .map_err(|_| too_large())
    } else if js_sys::ArrayBuffer::is_view(value) && value.is_instance_of::<Uint8Array>() {
        let bytes: &Uint8Array = value.unchecked_ref();
        if bytes.length() as usize > max {
            return Err(too_large());
        }
        Ok(Some(bytes.to_vec()))
    } else {
        Err(invalid(format!(
            "options.snapshot must be a Uint8Array or a string from exportSnapshot(), got {}",
            js::type_name(value)
        )))
    }
}

impl JsVault {
    /// `Vault.open` for Rust callers (the wasm tests).
    pub async fn open_native(options_value: JsValue) -> JsResult<JsVault> {
        super::install_panic_hook();
        let started = now_ms();
        let request = open_request(&options_value)?;
        let events = request.events.clone();
        let opened = async {
            // Opening storage and deriving nothing else: key derivation happens per call,
            // outside any storage transaction.
            let storage = open_storage(&request.backend, &request.name, &request.sql).await?;
            let platform = Platform {
                clock: std::sync::Arc::new(SystemClock),
                kdf: Box::new(WebCryptoKdf),
                scheduler: Box::new(TimerScheduler::default()),
            };
            Vault::open_with(storage, request.options, platform)
                .await
                .map_err(err)
        }
        .await;
        match opened {
            Ok(vault) => {
                events.emit("open", started, 0, "OK");
                Ok(JsVault {
                    vault: Rc::new(vault),
                    events,
                })
            }
            Err(e) => {
                events.emit_error("open", started, &e);
                Err(e)
            }
        }
    }

    /// API.md: once closed, every call but `close` rejects with `CLOSED`, whatever its
    /// arguments: `CLOSED` instead of an argument's error `e`. (With good arguments, the
    /// operation itself checks first.) Not inlined: `run` has a copy per method, and the
    /// IndexedDB download pays for each.
    #[inline(never)]
    fn closed_or(&self, e: JsValue) -> JsValue {
        if self.vault.is_closed() {
            err(crate::VaultError::Closed)
        } else {
            e
        }
    }

    /// The shape of every binding: arguments checked synchronously (a bad one rejects at once),
    /// then the operation on a clone of the `Rc`, so no borrow of `self` outlives this call;
    /// either way the operation is reported to the `onEvent` listener.
    fn run<A, F, Fut, T>(
        &self,
        op: &'static str,
        args: JsResult<A>,
        f: F,
        into_js: impl FnOnce(T) -> JsValue + 'static,
        records: fn(&T) -> u64,
    ) -> Promise
    where
        F: FnOnce(Rc<Vault>, A) -> Fut,
        Fut: Future<Output = crate::Result<T>> + 'static,
        T: 'static,
    {
        let started = self.events.clock();
        let events = self.events.clone();
        match args {
            Ok(args) => {
                let operation = f(self.vault.clone(), args);
                // One boxed future type for every method: `settle` and the epilogue are
                // compiled once, not once per method (the browser's download budget).
                let outcome: Pin<Box<dyn Future<Output = Outcome>>> = Box::pin(async move {
                    match operation.await {
                        Ok(result) => Ok((records(&result), into_js(result))),
                        Err(e) => Err(e),
                    }
                });
                settle(Box::pin(finish(op, started, events, outcome)))
            }
            Err(e) => {
                let e = self.closed_or(e);
                events.emit_error(op, started, &e);
                Promise::reject(&e)
            }
        }
    }
}
