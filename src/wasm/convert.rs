//! Reading arguments from JavaScript and building results for it. Everything a caller passes is
//! checked here, explicitly: a wrong type is `INVALID_ARGUMENT` naming the argument, never a panic
//! and never a silent coercion.
//!
//! Callers' objects may be hostile: getters that throw, Proxies (revoked ones too), arrays of a
//! billion elements, strings of a gigabyte. So every property is read through the catching
//! `Reflect` functions (a JavaScript exception must never unwind through wasm frames, which would
//! leave the instance mid-borrow), every length is checked before anything is copied into wasm
//! memory (an allocation that fails traps the instance), and no message repeats what the caller
//! passed: an argument in the wrong place may be a card number or a password.

use super::error::invalid;
use crate::record::{MAX_TIME_MS, Record};
use crate::secret::Secret;
use js_sys::{
    Array, ArrayBuffer, Date, Function, JsString, Object, Reflect, Uint8Array, Uint32Array,
};
use wasm_bindgen::{JsCast, JsValue};
use zeroize::{Zeroize, Zeroizing};

pub type JsResult<T> = Result<T, JsValue>;

/// Longest value, in UTF-16 code units (JavaScript `length`): 16 Mi, at most 48 MiB of UTF-8.
pub const MAX_VALUE_UNITS: u32 = 16 << 20;
/// Longest password.
pub const MAX_PASSWORD_UNITS: u32 = 64 << 10;
/// Longest token, id, setting key or name: tokens are at most 255 UTF-8 bytes anyway.
pub const MAX_NAME_UNITS: u32 = 1 << 10;
/// Longest setting value.
pub const MAX_SETTING_UNITS: u32 = 1 << 20;
/// Most items in one array argument (`tokensCreate`, `tokensRead`, `idIn`, ...).
pub const MAX_ITEMS: u32 = 100_000;
/// Most UTF-16 code units in all the values of one call together.
pub const MAX_BATCH_UNITS: u64 = 64 << 20;

fn too_long(what: &str, max: u32) -> JsValue {
    invalid(format!("{what} is longer than {max} characters"))
}

/// A required string of at most `max` UTF-16 code units.
pub fn text(value: &JsValue, what: &str, max: u32) -> JsResult<String> {
    let Some(s) = value.dyn_ref::<JsString>() else {
        return Err(invalid(format!(
            "{what} must be a string, got {}",
            type_name(value)
        )));
    };
    if s.length() > max {
        return Err(too_long(what, max));
    }
    exact_string(value, what)
}

/// A JavaScript string as UTF-8, exactly. wasm-bindgen's conversion replaces a lone surrogate
/// (half of a character) with U+FFFD: a value would not round-trip, a custom token would be
/// stored under another string than the caller's, and two passwords would derive the same key.
/// Such a string is refused; the check costs a second conversion only when the result holds
/// U+FFFD.
fn exact_string(value: &JsValue, what: &str) -> JsResult<String> {
    let mut out = value
        .as_string()
        .ok_or_else(|| invalid(format!("{what} must be a string")))?;
    // U+FFFD in UTF-8, found bytewise: `str::contains` of a char brings its pattern searcher,
    // 4.3 kB of the download.
    let replaced = out.as_bytes().windows(3).any(|w| w == [0xEF, 0xBF, 0xBD]);
    if replaced && JsValue::from_str(&out) != *value {
        // It may be a password: wiped like the copies callers keep in `Zeroizing`.
        zeroize::Zeroize::zeroize(&mut out);
        return Err(invalid(format!(
            "{what} holds a lone UTF-16 surrogate (half a character), which no stored text keeps"
        )));
    }
    Ok(out)
}

/// A token, id, key or name.
pub fn string(value: &JsValue, what: &str) -> JsResult<String> {
    text(value, what, MAX_NAME_UNITS)
}

/// A value to seal: wiped from wasm memory when dropped.
pub fn value(value: &JsValue, what: &str) -> JsResult<Zeroizing<String>> {
    text(value, what, MAX_VALUE_UNITS).map(Zeroizing::new)
}

/// `undefined` / `null` → `None`, otherwise a string.
pub fn opt_string(value: &JsValue, what: &str) -> JsResult<Option<String>> {
    if value.is_undefined() || value.is_null() {
        Ok(None)
    } else {
        string(value, what).map(Some)
    }
}

/// A password (`string`) or a raw 256-bit key (`Uint8Array` of 32 bytes). The length of a key
/// is checked before a byte is copied (a 2.5 GB array must not reach the allocator), and every
/// copy in wasm memory is wiped when dropped.
pub fn secret(value: &JsValue, what: &str) -> JsResult<Secret> {
    if value.is_string() {
        let password = Zeroizing::new(text(value, what, MAX_PASSWORD_UNITS)?);
        return Ok(Secret::Password(password));
    }
    // `ArrayBuffer.isView` is false for a Proxy, whose typed-array methods would throw.
    if ArrayBuffer::is_view(value) && value.is_instance_of::<Uint8Array>() {
        let bytes: &Uint8Array = value.unchecked_ref();
        if bytes.length() != 32 {
            return Err(invalid(format!(
                "{what} must be a string password or a Uint8Array key of exactly 32 bytes"
            )));
        }
        // Straight from the JavaScript array into the key's heap box: no copy on the stack.
        return Ok(Secret::raw_key_filled_by(|key| bytes.copy_to(key)));
    }
    Err(invalid(format!(
        "{what} must be a string password or a 32-byte Uint8Array key, got {}",
        type_name(value)
    )))
}

/// One property, read through `Reflect.get`: a getter or Proxy trap that throws is an
/// `INVALID_ARGUMENT`, not an exception through wasm.
pub fn get(target: &JsValue, key: &str, what: &str) -> JsResult<JsValue> {
    Reflect::get(target, &JsValue::from_str(key)).map_err(|_| {
        invalid(format!(
            "{what} could not be read: a getter or Proxy trap threw"
        ))
    })
}

/// The items of an array, each read with `item`. Proxies are read through `Reflect` like any
/// object; the length is checked before anything is read.
pub fn array<T>(
    value: &JsValue,
    what: &str,
    mut item: impl FnMut(&JsValue, &str) -> JsResult<T>,
) -> JsResult<Vec<T>> {
    if !value.is_instance_of::<Array>() {
        return Err(invalid(format!(
            "{what} must be an array of strings, got {}",
            type_name(value)
        )));
    }
    let length = get(value, "length", what)?
        .as_f64()
        .filter(|n| n.is_finite() && *n >= 0.0 && n.fract() == 0.0)
        .ok_or_else(|| invalid(format!("{what} has no valid length")))?;
    if length > f64::from(MAX_ITEMS) {
        return Err(invalid(format!(
            "{what} has more than {MAX_ITEMS} items; split it into several calls"
        )));
    }
    let mut out = Vec::with_capacity(length as usize);
    for i in 0..length as u32 {
        let element = Reflect::get_u32(value, i).map_err(|_| {
            invalid(format!(
                "{what}[{i}] could not be read: a getter or Proxy trap threw"
            ))
        })?;
        out.push(item(&element, &format!("{what}[{i}]"))?);
    }
    Ok(out)
}

/// An array of tokens or ids.
pub fn strings(value: &JsValue, what: &str) -> JsResult<Vec<String>> {
    array(value, what, string)
}

/// An array of values to seal, at most [`MAX_BATCH_UNITS`] together.
pub fn values(value: &JsValue, what: &str) -> JsResult<Vec<Zeroizing<String>>> {
    let mut total = 0u64;
    array(value, what, |v, at| {
        if let Some(s) = v.dyn_ref::<JsString>() {
            total += u64::from(s.length());
            if total > MAX_BATCH_UNITS {
                return Err(invalid(format!(
                    "{what} holds more than {MAX_BATCH_UNITS} characters in all; split it into several calls"
                )));
            }
        }
        self::value(v, at)
    })
}

/// The own enumerable-or-not string keys of an object (symbols are ignored).
fn own_keys(object: &JsValue, what: &str) -> JsResult<Vec<String>> {
    let keys = Reflect::own_keys(object)
        .map_err(|_| invalid(format!("{what} could not be read: a Proxy trap threw")))?;
    if keys.length() > MAX_ITEMS {
        return Err(invalid(format!("{what} has more than {MAX_ITEMS} keys")));
    }
    let mut names = Vec::new();
    for key in keys.iter().filter(JsValue::is_string) {
        names.push(exact_string(&key, what)?);
    }
    Ok(names)
}

/// A `Record<string, string>` as `(key, value)` pairs, in property order.
pub fn string_record(value: &JsValue, what: &str) -> JsResult<Vec<(String, String)>> {
    if !is_plain_object(value) {
        return Err(invalid(format!(
            "{what} must be an object mapping keys to tokens, got {}",
            type_name(value)
        )));
    }
    let mut pairs = Vec::new();
    for (i, key) in own_keys(value, what)?.into_iter().enumerate() {
        if key.len() > MAX_NAME_UNITS as usize {
            return Err(too_long(&format!("a key of {what}"), MAX_NAME_UNITS));
        }
        // Named by position: the key is the caller's text (API.md "Errors").
        let at = format!("the token of key #{i} of {what}");
        let token = string(&get(value, &key, &at)?, &at)?;
        pairs.push((key, token));
    }
    Ok(pairs)
}

/// A time: `Date`, milliseconds since the epoch, or `null`/`undefined` for "none".
pub fn opt_time(value: &JsValue, what: &str) -> JsResult<Option<i64>> {
    if value.is_undefined() {
        return Ok(None);
    }
    time_or_null(value, what)
}

/// A time that must be given: `Date`, milliseconds since the epoch, or `null` for "none" (a
/// forgotten argument is an error, not "never expires").
pub fn time_or_null(value: &JsValue, what: &str) -> JsResult<Option<i64>> {
    if value.is_null() {
        return Ok(None);
    }
    let ms = if value.is_instance_of::<Date>() {
        // `Date.prototype.getTime` through `Reflect.apply`, which throws (caught) for a Proxy.
        let get_time = get(&Date::new_0().into(), "getTime", what)?;
        let get_time: &js_sys::Function = get_time.unchecked_ref();
        Reflect::apply(get_time, value, &Array::new())
            .ok()
            .and_then(|t: JsValue| t.as_f64())
            .ok_or_else(|| invalid(format!("{what} is not a readable Date")))?
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
            "{what} must be a valid time (an integer number of milliseconds within the range of Date)"
        )));
    }
    Ok(Some(ms as i64))
}

/// An optional integer from `min` to `max` (both at most 2^53, JavaScript's safe integers).
pub fn opt_int(value: &JsValue, what: &str, min: u64, max: u64) -> JsResult<Option<u64>> {
    if value.is_undefined() {
        return Ok(None);
    }
    match value.as_f64() {
        Some(n) if n.is_finite() && n.fract() == 0.0 && (min as f64..=max as f64).contains(&n) => {
            Ok(Some(n as u64))
        }
        // Bounds are printed as integers: formatting floats would cost the download 14 kB.
        Some(_) => Err(invalid(format!(
            "{what} must be an integer from {min} to {max}"
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

/// The fields of an options object, read once each into a plain object, refusing keys it does
/// not know (a typo such as `kdfIteration` must not pass silently). `undefined`/`null` mean "no
/// options". Reading every known field up front means a getter runs exactly once, and a throwing
/// one is reported here.
pub fn options(value: &JsValue, what: &str, known: &[&str]) -> JsResult<Object> {
    let plain = Object::new();
    if value.is_undefined() || value.is_null() {
        return Ok(plain);
    }
    if !is_plain_object(value) {
        return Err(invalid(format!(
            "{what} must be an object, got {}",
            type_name(value)
        )));
    }
    for key in own_keys(value, what)? {
        if !known.contains(&key.as_str()) {
            // The key is not quoted: it is the caller's text (API.md "Errors"). The names are
            // appended in a loop: `join` was the engine's only use of the standard library's
            // (1.2 kB of wasm before gzip).
            let mut message = format!("{what} has an option that is not one of: ");
            for (i, name) in known.iter().enumerate() {
                if i > 0 {
                    message.push_str(", ");
                }
                message.push_str(name);
            }
            return Err(invalid(message));
        }
    }
    for key in known {
        let v = get(value, key, &format!("{what}.{key}"))?;
        if !v.is_undefined() {
            set(&plain, key, &v);
        }
    }
    Ok(plain)
}

/// A plain copy of an object's own string-keyed properties, each read once through `Reflect`.
pub fn plain_copy(value: &JsValue, what: &str) -> JsResult<Object> {
    let copy = Object::new();
    for key in own_keys(value, what)? {
        let v = get(value, &key, &format!("a property of {what}"))?;
        set(&copy, &key, &v);
    }
    Ok(copy)
}

/// One property of an object made by [`options`] (`undefined` when absent); reading a plain
/// object's data property cannot throw.
pub fn field(object: &Object, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn is_plain_object(value: &JsValue) -> bool {
    value.is_object() && !value.is_function() && !value.is_instance_of::<Array>()
}

/// How a value reads in an error message: its type only, never its content.
pub fn type_name(value: &JsValue) -> &'static str {
    if value.is_undefined() {
        "undefined"
    } else if value.is_null() {
        "null"
    } else if value.as_f64().is_some() {
        "number"
    } else if value.is_string() {
        "string"
    } else if value.as_bool().is_some() {
        "boolean"
    } else if value.is_function() {
        "function"
    } else if value.is_bigint() {
        "bigint"
    } else if value.is_symbol() {
        "symbol"
    } else if value.is_instance_of::<Array>() {
        "Array"
    } else if value.is_instance_of::<Date>() {
        "Date"
    } else if ArrayBuffer::is_view(value) {
        "a typed array or DataView"
    } else {
        "object"
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

/// Most UTF-16 code units in one string of [`string_pairs`] (unless one pair is longer): well
/// below the longest string JavaScript engines make (V8: 2^29 - 24), which a batch of long
/// values could pass, and small enough that a test crosses it cheaply.
const PAIRS_CHUNK_UNITS: usize = 1 << 20;

/// `(key, value)` pairs for the TypeScript layer's `stringMap`, which makes them the
/// `Record<string, string>` the API returns: `[text, lengths, text, lengths, ...]`, each `text`
/// the keys and values of some pairs one after the other and its `Uint32Array` their lengths in
/// UTF-16 code units (key, value, key, value, ...), a new text starting where one would pass
/// [`PAIRS_CHUNK_UNITS`]. One string and one array cross into JavaScript instead of two calls
/// and two strings for each pair (`tokensRead(1,000)` in Node about 5% faster). The values are
/// wiped from wasm memory once copied out.
pub fn string_pairs(mut pairs: Vec<(String, String)>) -> JsValue {
    let parts = Array::new();
    let mut start = 0;
    while start < pairs.len() {
        let (mut end, mut units, mut bytes) = (start, 0, 0);
        let mut lengths: Vec<u32> = Vec::new();
        while let Some((k, v)) = pairs.get(end) {
            let (k_units, v_units) = (utf16_len(k), utf16_len(v));
            if end > start && units + k_units + v_units > PAIRS_CHUNK_UNITS {
                break;
            }
            for n in [k_units, v_units] {
                lengths.push(u32::try_from(n).unwrap_or(u32::MAX));
            }
            (end, units, bytes) = (
                end + 1,
                units + k_units + v_units,
                bytes + k.len() + v.len(),
            );
        }
        // Sized before anything is written: it never reallocates, which would leave an unwiped
        // copy of the values behind.
        let mut text = Zeroizing::new(String::with_capacity(bytes));
        for part in pairs[start..end].iter().flat_map(|(k, v)| [k, v]) {
            text.push_str(part);
        }
        parts.push(&JsValue::from_str(&text));
        parts.push(&Uint32Array::from(&lengths[..]));
        start = end;
    }
    for (_, value) in &mut pairs {
        value.zeroize();
    }
    parts.into()
}

/// A string's JavaScript `length`.
fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.encode_utf16().count()
    }
}

/// A plaintext for JavaScript, wiped from wasm memory once copied out.
pub fn plaintext(value: String) -> JsValue {
    let value = Zeroizing::new(value);
    JsValue::from_str(&value)
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

/// An optional function argument (`undefined` or `null`: none).
pub fn opt_function(value: JsValue, what: &str) -> JsResult<Option<Function>> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .dyn_into::<Function>()
        .map(Some)
        .map_err(|v| invalid(format!("{what} must be a function, got {}", type_name(&v))))
}

/// An optional `AbortSignal` argument (`undefined` or `null`: none).
pub fn opt_signal(value: JsValue, what: &str) -> JsResult<Option<JsValue>> {
    if value.is_undefined() || value.is_null() {
        Ok(None)
    } else if value.is_instance_of::<web_sys::AbortSignal>() {
        Ok(Some(value))
    } else {
        Err(invalid(format!(
            "{what} must be an AbortSignal, got {}",
            type_name(&value)
        )))
    }
}
