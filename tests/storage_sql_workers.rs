//! The storage conformance suite on the SQL backend over real Cloudflare D1 and Durable Object
//! SQLite (workerd, in Miniflare), through the package's `d1()` and `durableObject()` adapters
//! and the wasm executor binding. `tests/workers/run-conformance.mjs` starts the gateway worker,
//! sets `SQL_GATEWAY` and checks that every case passed on both D1 and a Durable Object. Without
//! `SQL_GATEWAY` (a plain `cargo test --target wasm32…`) every case fails, saying so: a suite
//! that cannot reach its databases has tested nothing, and must not pass.
#![cfg(all(target_arch = "wasm32", feature = "wasm", feature = "sql"))]

mod conformance;

use js_sys::{Function, Reflect};
use vaultstore_wasm::storage::sql::SqlStorage;
use vaultstore_wasm::wasm::sql::JsSqlExecutor;
use wasm_bindgen::JsValue;

/// The gateway's URL, from the environment of the Node process running the tests.
fn gateway() -> String {
    let url = (|| {
        let process = Reflect::get(&js_sys::global(), &"process".into()).ok()?;
        let env = Reflect::get(&process, &"env".into()).ok()?;
        Reflect::get(&env, &"SQL_GATEWAY".into()).ok()?.as_string()
    })();
    url.filter(|u| !u.is_empty()).expect(
        "SQL_GATEWAY is not set: this suite runs against D1 and Durable Objects only through \
         `node tests/workers/run-conformance.mjs`, which starts the gateway worker",
    )
}

/// An executor object that posts each call to `base` (what `d1()` or `durableObject()` runs).
fn remote_executor(base: &str) -> JsSqlExecutor {
    let make = Function::new_with_args(
        "base",
        r#"
        const call = async (action, body) => {
          // A connection the gateway closed while idle can fail the next request before the
          // gateway reads it (undici: "other side closed", EPIPE, ECONNRESET on a reused
          // socket); such a request never ran, so it is sent again, on a new connection.
          let response;
          for (let attempt = 1; ; attempt++) {
            try {
              response = await fetch(`${base}/${action}`, { method: "POST", body: JSON.stringify(body) });
              break;
            } catch (error) {
              const cause = error.cause?.code ?? error.cause?.message ?? String(error.cause);
              const stale = /other side closed|EPIPE|ECONNRESET|UND_ERR_SOCKET/.test(cause);
              if (!stale || attempt === 3) {
                throw Object.assign(new Error(`${error.message}: ${cause}`), { name: error.name });
              }
            }
          }
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

/// The case's store, through the gateway at `base`.
async fn open(base: String, namespace: &str) -> SqlStorage<JsSqlExecutor> {
    SqlStorage::open(remote_executor(&base), namespace)
        .await
        .expect("the SQL backend creates its tables")
}

/// Every case on D1 and on a Durable Object; the runner checks both halves ran.
macro_rules! gateway_conformance {
    ($($case:ident),* $(,)?) => {
        mod d1 {
            use super::*;
            $(
                #[wasm_bindgen_test::wasm_bindgen_test]
                async fn $case() {
                    // One D1 database for every case, each in its own namespace.
                    let base = format!("{}/d1", gateway());
                    conformance::$case(open(base, concat!("d1-", stringify!($case))).await).await;
                }
            )*
        }
        mod durable_object {
            use super::*;
            $(
                #[wasm_bindgen_test::wasm_bindgen_test]
                async fn $case() {
                    // A Durable Object, so a new SQLite database, per case.
                    let base = format!("{}/do/{}", gateway(), stringify!($case));
                    conformance::$case(open(base, "vaultstore").await).await;
                }
            )*
        }
    };
}

conformance_cases!(gateway_conformance);
