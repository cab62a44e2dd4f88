//! The `RecordQuery` class and `QueryInit` objects. Types are checked here, field by field, with
//! unknown fields refused; ranges and combinations by `RecordQuery::validate` in the core.

use super::convert::{
    JsResult, field, opt_bool, opt_string, options, plain_copy, strings, type_name,
};
use super::error::{err, invalid};
use crate::query::RecordQuery;
use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;

const FIELDS: [&str; 12] = [
    "id",
    "idIn",
    "token",
    "tokenIn",
    "limit",
    "offset",
    "orderBy",
    "sortOrder",
    "softDeletedInclude",
    "softDeletedOnly",
    "expiredOnly",
    "countOnly",
];

/// An optional integer; its range (negative or not) is the core's to judge.
fn opt_integer(value: &JsValue, what: &str) -> JsResult<Option<i64>> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    match value.as_f64() {
        Some(n) if n.is_finite() && n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_991.0 => {
            Ok(Some(n as i64))
        }
        Some(_) => Err(invalid(format!("{what} must be an integer"))),
        None => Err(invalid(format!(
            "{what} must be a number, got {}",
            type_name(value)
        ))),
    }
}

fn opt_strings(value: &JsValue, what: &str) -> JsResult<Option<Vec<String>>> {
    if value.is_undefined() || value.is_null() {
        Ok(None)
    } else {
        strings(value, what).map(Some)
    }
}

/// A query from `undefined`, a `QueryInit` object, or a `RecordQuery`'s `toJSON()`.
pub fn query_from_value(value: &JsValue) -> JsResult<RecordQuery> {
    let o = options(value, "query", &FIELDS)?;
    // `null` leaves a flag unset, as it does every other field of a query.
    let flag = |key: &str| -> JsResult<bool> {
        let value = field(&o, key);
        if value.is_null() {
            return Ok(false);
        }
        Ok(opt_bool(&value, &format!("query.{key}"))?.unwrap_or(false))
    };
    Ok(RecordQuery {
        id: opt_string(&field(&o, "id"), "query.id")?,
        id_in: opt_strings(&field(&o, "idIn"), "query.idIn")?,
        token: opt_string(&field(&o, "token"), "query.token")?,
        token_in: opt_strings(&field(&o, "tokenIn"), "query.tokenIn")?,
        limit: opt_integer(&field(&o, "limit"), "query.limit")?,
        offset: opt_integer(&field(&o, "offset"), "query.offset")?,
        order_by: opt_string(&field(&o, "orderBy"), "query.orderBy")?,
        sort_order: opt_string(&field(&o, "sortOrder"), "query.sortOrder")?,
        soft_deleted_include: flag("softDeletedInclude")?,
        soft_deleted_only: flag("softDeletedOnly")?,
        expired_only: flag("expiredOnly")?,
        count_only: flag("countOnly")?,
    })
}

/// A query under construction. Setters store what they are given; `validate()` (and every call
/// that takes the query) checks it all and throws `INVALID_ARGUMENT`.
#[wasm_bindgen(js_name = RecordQuery)]
pub struct JsRecordQuery {
    init: Object,
}

#[wasm_bindgen(js_class = RecordQuery)]
impl JsRecordQuery {
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "QueryInit | undefined")] init: JsValue,
    ) -> Result<JsRecordQuery, JsValue> {
        if init.is_undefined() || init.is_null() {
            return Ok(JsRecordQuery {
                init: Object::new(),
            });
        }
        if !init.is_object() {
            return Err(invalid(format!(
                "a RecordQuery is built from a plain object, got {}",
                type_name(&init)
            )));
        }
        Ok(JsRecordQuery {
            init: plain_copy(&init, "query")?,
        })
    }

    fn put(&mut self, key: &str, value: JsValue) {
        let _ = Reflect::set(&self.init, &JsValue::from_str(key), &value);
    }

    #[wasm_bindgen(js_name = setId)]
    pub fn set_id(&mut self, #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue) {
        self.put("id", id)
    }
    #[wasm_bindgen(js_name = setIdIn)]
    pub fn set_id_in(&mut self, #[wasm_bindgen(unchecked_param_type = "string[]")] ids: JsValue) {
        self.put("idIn", ids)
    }
    #[wasm_bindgen(js_name = setToken)]
    pub fn set_token(&mut self, #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue) {
        self.put("token", token)
    }
    #[wasm_bindgen(js_name = setTokenIn)]
    pub fn set_token_in(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] tokens: JsValue,
    ) {
        self.put("tokenIn", tokens)
    }
    #[wasm_bindgen(js_name = setLimit)]
    pub fn set_limit(&mut self, #[wasm_bindgen(unchecked_param_type = "number")] n: JsValue) {
        self.put("limit", n)
    }
    #[wasm_bindgen(js_name = setOffset)]
    pub fn set_offset(&mut self, #[wasm_bindgen(unchecked_param_type = "number")] n: JsValue) {
        self.put("offset", n)
    }
    #[wasm_bindgen(js_name = setOrderBy)]
    pub fn set_order_by(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "OrderBy")] column: JsValue,
    ) {
        self.put("orderBy", column)
    }
    #[wasm_bindgen(js_name = setSortOrder)]
    pub fn set_sort_order(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "SortOrder")] order: JsValue,
    ) {
        self.put("sortOrder", order)
    }
    #[wasm_bindgen(js_name = setSoftDeletedInclude)]
    pub fn set_soft_deleted_include(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "boolean")] b: JsValue,
    ) {
        self.put("softDeletedInclude", b)
    }
    #[wasm_bindgen(js_name = setSoftDeletedOnly)]
    pub fn set_soft_deleted_only(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "boolean")] b: JsValue,
    ) {
        self.put("softDeletedOnly", b)
    }
    #[wasm_bindgen(js_name = setExpiredOnly)]
    pub fn set_expired_only(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "boolean")] b: JsValue,
    ) {
        self.put("expiredOnly", b)
    }
    #[wasm_bindgen(js_name = setCountOnly)]
    pub fn set_count_only(&mut self, #[wasm_bindgen(unchecked_param_type = "boolean")] b: JsValue) {
        self.put("countOnly", b)
    }

    /// Throws `INVALID_ARGUMENT` naming what is wrong.
    pub fn validate(&self) -> Result<(), JsValue> {
        query_from_value(&self.init)?
            .validate()
            .map(drop)
            .map_err(err)
    }

    /// The query as a plain `QueryInit` object (what `recordList` receives).
    #[wasm_bindgen(js_name = toJSON, unchecked_return_type = "QueryInit")]
    pub fn to_json(&self) -> JsValue {
        let copy = Object::new();
        for key in FIELDS {
            let value =
                Reflect::get(&self.init, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED);
            if !value.is_undefined() {
                let _ = Reflect::set(&copy, &JsValue::from_str(key), &value);
            }
        }
        // Keys the caller added that are not query fields stay, so validation can name them.
        for key in Object::keys(&self.init).iter() {
            if !FIELDS.iter().any(|f| key.as_string().as_deref() == Some(f)) {
                let value = Reflect::get(&self.init, &key).unwrap_or(JsValue::UNDEFINED);
                let _ = Reflect::set(&copy, &key, &value);
            }
        }
        copy.into()
    }
}
