//! The storage conformance suite on the SQL backend over real Cloudflare D1 and Durable Object
//! SQLite (workerd, in Miniflare), through the package's `d1()` and `durableObject()` adapters
//! and the wasm executor binding. `tests/workers/run-conformance.mjs` starts the gateway worker
//! and sets `SQL_GATEWAY`; without it (a plain `cargo test --target wasm32…`) every case passes
//! without running.
#![cfg(all(target_arch = "wasm32", feature = "wasm", feature = "sql"))]

mod conformance;

use js_sys::{Function, Reflect};
use vaultstore_wasm::storage::sql::SqlStorage;
use vaultstore_wasm::wasm::sql::JsSqlExecutor;
use wasm_bindgen::JsValue;

/// The gateway's URL, from the environment of the Node process running the tests.
fn gateway() -> Option<String> {
    let process = Reflect::get(&js_sys::global(), &"process".into()).ok()?;
    let env = Reflect::get(&process, &"env".into()).ok()?;
    Reflect::get(&env, &"SQL_GATEWAY".into()).ok()?.as_string()
}

/// An executor object that posts each call to `base` (what `d1()` or `durableObject()` runs).
fn remote_executor(base: &str) -> JsSqlExecutor {
    let make = Function::new_with_args(
        "base",
        r#"
        const call = async (action, body) => {
          const response = await fetch(`${base}/${action}`, { method: "POST", body: JSON.stringify(body) });
          const data = await response.json();
          if (!response.ok) throw Object.assign(new Error(data.message), { name: data.name });
          return data;
        };
        return {
          all: async (sql, params) => (await call("all", { sql, params })).rows,
          batch: async (statements) => { await call("batch", { statements }); },
        };
        "#,
    );
    let executor = make
        .call1(&JsValue::UNDEFINED, &JsValue::from_str(base))
        .expect("the executor object is built");
    JsSqlExecutor::from_js(&executor, "executor").expect("it has all() and batch()")
}

/// The case's store: `None` when no gateway runs.
async fn open(base: Option<String>, namespace: &str) -> Option<SqlStorage<JsSqlExecutor>> {
    let base = base?;
    Some(
        SqlStorage::open(remote_executor(&base), namespace)
            .await
            .expect("the SQL backend creates its tables"),
    )
}

/// Cases run only where the gateway does; elsewhere `$case` is a no-op.
macro_rules! gateway_conformance {
    ($($case:ident),* $(,)?) => {
        mod d1 {
            use super::*;
            $(
                #[wasm_bindgen_test::wasm_bindgen_test]
                async fn $case() {
                    // One D1 database for every case, each in its own namespace.
                    let base = gateway().map(|g| format!("{g}/d1"));
                    if let Some(s) = open(base, concat!("d1-", stringify!($case))).await {
                        conformance::$case(s).await;
                    }
                }
            )*
        }
        mod durable_object {
            use super::*;
            $(
                #[wasm_bindgen_test::wasm_bindgen_test]
                async fn $case() {
                    // A Durable Object, so a new SQLite database, per case.
                    let base = gateway().map(|g| format!("{g}/do/{}", stringify!($case)));
                    if let Some(s) = open(base, "vaultstore").await {
                        conformance::$case(s).await;
                    }
                }
            )*
        }
    };
}

conformance_cases!(gateway_conformance);
