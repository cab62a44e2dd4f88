//! The host's SQL executor (API.md "The SQL backend"): any JavaScript object with
//! `all(sql, params)`, resolving to an array of row arrays, and `batch(statements)`, running
//! `[{ sql, params }]` in one transaction. The package's `d1()`, `durableObject()` and `libsql()`
//! return one; users may write their own (js/sql.ts documents the shape).
//!
//! Values cross as `null`, numbers (integers below 2^53: times are milliseconds), strings and
//! `Uint8Array`s. Whatever the object does (throws, returns a non-promise, resolves to
//! something odd), the backend gets an `SqlError`, never an exception through wasm.

use super::convert::{self as js, JsResult};
use super::error::invalid;
use crate::storage::sql::{SqlError, SqlExecutor, SqlValue, Statement};
use async_trait::async_trait;
use js_sys::{Array, ArrayBuffer, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A duck-typed executor object, its two methods read once when the vault opens.
pub struct JsSqlExecutor {
    target: JsValue,
    all: Function,
    batch: Function,
}

impl JsSqlExecutor {
    /// Check that `value` has `all` and `batch` methods (`INVALID_ARGUMENT` otherwise).
    pub fn from_js(value: &JsValue, what: &str) -> JsResult<Self> {
        if !value.is_object() {
            return Err(invalid(format!(
                "{what} must be an SQL executor such as d1(env.DB), durableObject(ctx.storage) or libsql(client), got {}",
                js::type_name(value)
            )));
        }
        let method = |name: &str| -> JsResult<Function> {
            js::get(value, name, &format!("{what}.{name}"))?
                .dyn_into::<Function>()
                .map_err(|_| {
                    invalid(format!(
                        "{what}.{name} must be a function: an SQL executor has all(sql, params) and batch(statements)"
                    ))
                })
        };
        Ok(JsSqlExecutor {
            target: value.clone(),
            all: method("all")?,
            batch: method("batch")?,
        })
    }

    /// Call `f` on the executor and await what it returns (a value or a promise).
    async fn call(&self, f: &Function, args: &Array) -> Result<JsValue, SqlError> {
        let returned = f.apply(&self.target, args).map_err(|e| sql_error(&e))?;
        JsFuture::from(Promise::resolve(&returned))
            .await
            .map_err(|e| sql_error(&e))
    }
}

/// What the executor threw, as its `name` and `message` (the engine's own words: SQLite names
/// the constraint that failed, never a bound value).
fn sql_error(error: &JsValue) -> SqlError {
    let field = |key: &str| {
        Reflect::get(error, &JsValue::from_str(key))
            .ok()
            .and_then(|v| v.as_string())
    };
    SqlError {
        original: crate::error::Original::thrown(error),
        name: field("name"),
        message: field("message")
            .or_else(|| error.as_string())
            .unwrap_or_else(|| "the SQL executor failed without a message".to_owned()),
    }
}

fn odd(what: &str) -> SqlError {
    SqlError {
        original: Default::default(),
        name: Some("TypeError".to_owned()),
        message: format!("the SQL executor returned {what}"),
    }
}

fn to_js(value: &SqlValue) -> JsValue {
    match value {
        SqlValue::Null => JsValue::NULL,
        SqlValue::Integer(n) => JsValue::from_f64(*n as f64),
        SqlValue::Text(s) => JsValue::from_str(s),
        SqlValue::Blob(b) => Uint8Array::from(b.as_slice()).into(),
    }
}

fn from_js(value: &JsValue) -> Result<SqlValue, SqlError> {
    if value.is_null() || value.is_undefined() {
        return Ok(SqlValue::Null);
    }
    if let Some(s) = value.as_string() {
        return Ok(SqlValue::Text(s));
    }
    if let Some(n) = value.as_f64() {
        return if n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
            Ok(SqlValue::Integer(n as i64))
        } else {
            Err(odd("a number that is not a safe integer"))
        };
    }
    if value.is_bigint() {
        // libSQL's `intMode: "bigint"`, for instance.
        return i64::try_from(value.clone())
            .map(SqlValue::Integer)
            .map_err(|_| odd("a bigint outside the 64-bit range"));
    }
    if let Some(b) = value.as_bool() {
        return Ok(SqlValue::Integer(i64::from(b)));
    }
    if value.is_instance_of::<Uint8Array>() {
        return Ok(SqlValue::Blob(value.unchecked_ref::<Uint8Array>().to_vec()));
    }
    if value.is_instance_of::<ArrayBuffer>() {
        return Ok(SqlValue::Blob(Uint8Array::new(value).to_vec()));
    }
    Err(odd("a value that is not null, a number, a string or bytes"))
}

/// The items of a JavaScript array (or array-like row), read through `Reflect`.
fn items(value: &JsValue, what: &str) -> Result<Vec<JsValue>, SqlError> {
    if !value.is_object() {
        return Err(odd(what));
    }
    let length = Reflect::get(value, &JsValue::from_str("length"))
        .ok()
        .and_then(|l| l.as_f64())
        .filter(|n| n.is_finite() && *n >= 0.0 && n.fract() == 0.0 && *n <= f64::from(u32::MAX))
        .ok_or_else(|| odd(what))?;
    (0..length as u32)
        .map(|i| Reflect::get_u32(value, i).map_err(|_| odd(what)))
        .collect()
}

fn params(values: &[SqlValue]) -> Array {
    values.iter().map(to_js).collect()
}

#[async_trait(?Send)]
impl SqlExecutor for JsSqlExecutor {
    async fn all(&self, sql: &str, values: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError> {
        let args = Array::of2(&JsValue::from_str(sql), &params(values));
        let rows = self.call(&self.all, &args).await?;
        items(&rows, "rows that are not an array of row arrays")?
            .iter()
            .map(|row| {
                items(row, "a row that is not an array")?
                    .iter()
                    .map(from_js)
                    .collect()
            })
            .collect()
    }

    async fn batch(&self, statements: Vec<Statement>) -> Result<(), SqlError> {
        let list: Array = statements
            .iter()
            .map(|s| {
                let o = Object::new();
                js::set(&o, "sql", &JsValue::from_str(&s.sql));
                js::set(&o, "params", &params(&s.params));
                JsValue::from(o)
            })
            .collect();
        self.call(&self.batch, &Array::of1(&list)).await.map(drop)
    }
}
