//! Reading arguments from JavaScript and building results for it. Everything a caller passes is
//! checked here, explicitly: a wrong type is `INVALID_ARGUMENT` naming the argument, never a panic
//! and never a silent coercion.

use super::error::invalid;
use crate::record::{MAX_TIME_MS, Record};
use crate::secret::Secret;
use js_sys::{Array, Date, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

pub type JsResult<T> = Result<T, JsValue>;

/// A required string argument.
pub fn string(value: &JsValue, what: &str) -> JsResult<String> {
    value
        .as_string()
        .ok_or_else(|| invalid(format!("{what} must be a string, got {}", type_name(value))))
}

/// `undefined` / `null` → `None`, otherwise a string.
pub fn opt_string(value: &JsValue, what: &str) -> JsResult<Option<String>> {
    if value.is_undefined() || value.is_null() {
        Ok(None)
    } else {
        string(value, what).map(Some)
    }
}

/// A password (`string`) or a raw 256-bit key (`Uint8Array` of 32 bytes).
pub fn secret(value: &JsValue, what: &str) -> JsResult<Secret> {
    if let Some(password) = value.as_string() {
        return Ok(Secret::password(&password));
    }
    if let Some(bytes) = value.dyn_ref::<Uint8Array>() {
        let mut key = zeroize::Zeroizing::new(vec![0u8; bytes.length() as usize]);
        bytes.copy_to(&mut key);
        return Secret::raw_key(&key).map_err(super::error::err);
    }
    Err(invalid(format!(
        "{what} must be a string password or a 32-byte Uint8Array key, got {}",
        type_name(value)
    )))
}

/// An array of strings.
pub fn strings(value: &JsValue, what: &str) -> JsResult<Vec<String>> {
    let array = value.dyn_ref::<Array>().ok_or_else(|| {
        invalid(format!(
            "{what} must be an array of strings, got {}",
            type_name(value)
        ))
    })?;
    array
        .iter()
        .enumerate()
        .map(|(i, v)| string(&v, &format!("{what}[{i}]")))
        .collect()
}

/// A `Record<string, string>` as `(key, value)` pairs, in property order.
pub fn string_record(value: &JsValue, what: &str) -> JsResult<Vec<(String, String)>> {
    if !is_plain_object(value) {
        return Err(invalid(format!(
            "{what} must be an object mapping keys to tokens, got {}",
            type_name(value)
        )));
    }
    Object::entries(value.unchecked_ref())
        .iter()
        .map(|entry| {
            let pair: Array = entry.unchecked_into();
            let key = string(&pair.get(0), what)?;
            let token = string(&pair.get(1), &format!("{what}[{key:?}]"))?;
            Ok((key, token))
        })
        .collect()
}

/// A time: `Date`, milliseconds since the epoch, or `null`/`undefined` for "none".
pub fn opt_time(value: &JsValue, what: &str) -> JsResult<Option<i64>> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let ms = if let Some(date) = value.dyn_ref::<Date>() {
        date.get_time()
    } else if let Some(n) = value.as_f64() {
        n
    } else {
        return Err(invalid(format!(
            "{what} must be a Date, a number of milliseconds or null, got {}",
            type_name(value)
        )));
    };
    if !ms.is_finite() || ms.fract() != 0.0 || ms.abs() > MAX_TIME_MS as f64 {
        return Err(invalid(format!(
            "{what} must be a valid time (an integer number of milliseconds within the range of Date), got {ms}"
        )));
    }
    Ok(Some(ms as i64))
}

/// An optional integer within `range`.
pub fn opt_int(value: &JsValue, what: &str, min: f64, max: f64) -> JsResult<Option<f64>> {
    if value.is_undefined() {
        return Ok(None);
    }
    match value.as_f64() {
        Some(n) if n.is_finite() && n.fract() == 0.0 && (min..=max).contains(&n) => Ok(Some(n)),
        Some(n) => Err(invalid(format!(
            "{what} must be an integer from {min} to {max}, got {n}"
        ))),
        None => Err(invalid(format!(
            "{what} must be a number, got {}",
            type_name(value)
        ))),
    }
}

/// An optional boolean.
pub fn opt_bool(value: &JsValue, what: &str) -> JsResult<Option<bool>> {
    if value.is_undefined() {
        return Ok(None);
    }
    value.as_bool().map(Some).ok_or_else(|| {
        invalid(format!(
            "{what} must be a boolean, got {}",
            type_name(value)
        ))
    })
}

/// The fields of an options object, refusing keys it does not know (a typo such as
/// `kdfIteration` must not pass silently). `undefined`/`null` mean "no options".
pub fn options(value: &JsValue, what: &str, known: &[&str]) -> JsResult<Object> {
    if value.is_undefined() || value.is_null() {
        return Ok(Object::new());
    }
    if !value.is_object() || value.is_function() || Array::is_array(value) {
        return Err(invalid(format!(
            "{what} must be an object, got {}",
            type_name(value)
        )));
    }
    let object: Object = value.clone().unchecked_into();
    for key in Object::keys(&object).iter() {
        let key = key.as_string().unwrap_or_default();
        if !known.contains(&key.as_str()) {
            return Err(invalid(format!(
                "{what} has an unknown option {key:?}; known options: {}",
                known.join(", ")
            )));
        }
    }
    Ok(object)
}

/// One property of an options object (`undefined` when absent).
pub fn field(object: &Object, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn is_plain_object(value: &JsValue) -> bool {
    value.is_object() && !value.is_function() && !Array::is_array(value)
}

/// How a value reads in an error message: `string`, `number 5`, `null`, `Array`...
pub fn type_name(value: &JsValue) -> String {
    if value.is_undefined() {
        "undefined".into()
    } else if value.is_null() {
        "null".into()
    } else if let Some(n) = value.as_f64() {
        format!("number {n}")
    } else if value.is_string() {
        "string".into()
    } else if value.as_bool().is_some() {
        "boolean".into()
    } else if Array::is_array(value) {
        "Array".into()
    } else if value.is_function() {
        "function".into()
    } else if value.is_bigint() {
        "bigint".into()
    } else if value.is_symbol() {
        "symbol".into()
    } else {
        value
            .dyn_ref::<Object>()
            .map(|o| {
                o.constructor()
                    .name()
                    .as_string()
                    .unwrap_or_else(|| "object".into())
            })
            .unwrap_or_else(|| "object".into())
    }
}

// ---- results ----

/// Set a data property. On a plain object or Error the wasm layer just made this cannot fail.
pub(super) fn set(target: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}

fn date(ms: Option<i64>) -> JsValue {
    ms.map_or(JsValue::NULL, |ms| {
        Date::new(&JsValue::from_f64(ms as f64)).into()
    })
}

/// A `VaultRecord`: metadata with `Date`s; `value` is the envelope, never plaintext.
pub fn record(r: &Record) -> JsValue {
    let o = Object::new();
    set(&o, "id", &JsValue::from_str(&r.id));
    set(&o, "token", &JsValue::from_str(&r.token));
    set(&o, "value", &JsValue::from_str(&r.value));
    set(&o, "createdAt", &date(Some(r.created_at)));
    set(&o, "updatedAt", &date(Some(r.updated_at)));
    set(&o, "expiresAt", &date(r.expires_at));
    set(&o, "softDeletedAt", &date(r.soft_deleted_at));
    o.into()
}

/// A `Record<string, string>`. Keys are defined, not assigned, so a key like `"__proto__"` is an
/// ordinary own property instead of replacing the object's prototype.
pub fn string_map(pairs: &[(String, String)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        let descriptor = Object::new();
        set(&descriptor, "value", &JsValue::from_str(v));
        for flag in ["writable", "enumerable", "configurable"] {
            set(&descriptor, flag, &JsValue::TRUE);
        }
        let _ = Reflect::define_property(&o, &JsValue::from_str(k), &descriptor);
    }
    o.into()
}

pub fn string_array(items: &[String]) -> JsValue {
    items
        .iter()
        .map(|s| JsValue::from_str(s))
        .collect::<Array>()
        .into()
}

pub fn bytes(data: &[u8]) -> JsValue {
    Uint8Array::from(data).into()
}
