//! The JavaScript boundary, tested in Node through wasm-bindgen-test: error shape, no panic on
//! malformed input, concurrency on one `Vault`, and WebCrypto PBKDF2 against the Rust reference.
#![cfg(all(target_arch = "wasm32", feature = "wasm", feature = "gluesql"))]

use futures::future::join_all;
use js_sys::{Array, Date, Object, Promise, Reflect, Uint8Array, Uint32Array};
use vaultstore_wasm::crypto::{KdfParams, derive_password_key};
use vaultstore_wasm::wasm::platform::WebCryptoKdf;
use vaultstore_wasm::wasm::{JsRecordQuery, JsVault, last_panic};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;

const PASSWORD: &str = "correct horse battery";

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.into()
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap()
}

async fn open(extra: &[(&str, JsValue)]) -> JsVault {
    let mut pairs = vec![
        ("backend", JsValue::from_str("memory")),
        ("kdfIterations", JsValue::from_f64(1000.0)),
    ];
    pairs.extend(extra.iter().cloned());
    JsVault::open_native(obj(&pairs)).await.unwrap()
}

async fn ok(p: Promise) -> JsValue {
    JsFuture::from(p).await.expect("the call should succeed")
}

/// The rejection of `p`, checked to be a VaultError-shaped `Error` with `code`.
async fn rejects(p: Promise, code: &str) -> JsValue {
    let e = JsFuture::from(p).await.expect_err("the call should reject");
    assert!(
        e.is_instance_of::<js_sys::Error>(),
        "a real Error, got {e:?}"
    );
    assert_eq!(get(&e, "name").as_string().as_deref(), Some("VaultError"));
    assert_eq!(
        get(&e, "code").as_string().as_deref(),
        Some(code),
        "{:?}",
        get(&e, "message")
    );
    let message = get(&e, "message").as_string().unwrap();
    assert!(
        message.len() > 20,
        "a message a person can act on: {message:?}"
    );
    e
}

#[wasm_bindgen_test]
async fn errors_carry_name_code_reason_and_tokens() {
    let v = open(&[]).await;
    let token = ok(v.token_create(PASSWORD.into(), PASSWORD.into(), JsValue::UNDEFINED)).await;
    let e = rejects(
        v.token_read("tk_missing".into(), PASSWORD.into()),
        "RECORD_NOT_FOUND",
    )
    .await;
    assert_eq!(get(&e, "reason").as_string().as_deref(), Some("missing"));
    let tokens: Array = get(&e, "tokens").dyn_into().unwrap();
    assert_eq!(tokens.get(0).as_string().as_deref(), Some("tk_missing"));

    let e = rejects(
        v.token_read(token.clone(), "a wrong password".into()),
        "INVALID_PASSWORD",
    )
    .await;
    assert!(get(&e, "reason").is_undefined());
    let list: Array = [token.clone(), JsValue::from_str("tk_gone")]
        .into_iter()
        .collect();
    let e = rejects(
        v.tokens_read(list.into(), PASSWORD.into()),
        "RECORD_NOT_FOUND",
    )
    .await;
    assert_eq!(Array::from(&get(&e, "tokens")).length(), 1);

    ok(v.token_soft_delete(token.clone())).await;
    let e = rejects(v.token_read(token, PASSWORD.into()), "RECORD_NOT_FOUND").await;
    assert_eq!(
        get(&e, "reason").as_string().as_deref(),
        Some("soft_deleted")
    );

    rejects(
        v.token_create_custom("t".into(), "v".into(), "short".into(), JsValue::UNDEFINED),
        "PASSWORD_POLICY",
    )
    .await;
    rejects(v.migrate_record_links(PASSWORD.into()), "IDENTITY_DISABLED").await;
    let ids = open(&[("passwordIdentity", JsValue::TRUE)]).await;
    rejects(
        ids.bulk_rekey(
            "nobody's password".into(),
            PASSWORD.into(),
            JsValue::UNDEFINED,
        ),
        "IDENTITY_NOT_FOUND",
    )
    .await;
    ok(v.close()).await;
    rejects(v.token_exists("tk_x".into()), "CLOSED").await;
}

#[wasm_bindgen_test]
async fn results_have_the_documented_shapes() {
    let v = open(&[]).await;
    let expires = Date::new(&JsValue::from_f64(4_102_444_800_000.0));
    let token = ok(v.token_create(
        "x".into(),
        PASSWORD.into(),
        obj(&[("expiresAt", expires.into())]),
    ))
    .await;
    let record = ok(v.record_find_by_token(token.clone())).await;
    for key in ["createdAt", "updatedAt", "expiresAt"] {
        assert!(
            get(&record, key).is_instance_of::<Date>(),
            "{key} is a Date"
        );
    }
    assert!(get(&record, "softDeletedAt").is_null());
    assert!(
        get(&record, "value")
            .as_string()
            .unwrap()
            .starts_with("vs1:")
    );
    // Keys that come from the caller, "__proto__" among them: the engine hands the pairs back
    // as `[text, lengths]`, keys and values one after the other with their UTF-16 lengths, and
    // the TypeScript layer's `stringMap` makes the object, where "__proto__" stays a plain key
    // (tests/js/tokens.test.mjs).
    ok(v.token_create_custom(
        "__proto__".into(),
        "proto value".into(),
        PASSWORD.into(),
        JsValue::UNDEFINED,
    ))
    .await;
    let map = obj(&[("a", token.clone())]);
    let descriptor: Object = obj(&[
        ("value", "__proto__".into()),
        ("enumerable", JsValue::TRUE),
        ("configurable", JsValue::TRUE),
        ("writable", JsValue::TRUE),
    ])
    .unchecked_into();
    let target: Object = map.clone().unchecked_into();
    Object::define_property(&target, &"__proto__".into(), &descriptor);
    let resolved: Array = ok(v.tokens_read_to_resolved_map(map, PASSWORD.into()))
        .await
        .unchecked_into();
    assert_eq!(resolved.length(), 2);
    assert_eq!(
        resolved.get(0).as_string().as_deref(),
        Some("ax__proto__proto value")
    );
    let lengths: Uint32Array = resolved.get(1).unchecked_into();
    assert_eq!(lengths.to_vec(), [1, 1, 9, 11]);
    let snapshot = ok(v.export_snapshot()).await;
    assert!(snapshot.is_instance_of::<Uint8Array>());
}

/// Every kind of wrong value, into every argument of every method: each call rejects (or
/// resolves), nothing panics, and the vault keeps working.
#[wasm_bindgen_test]
async fn malformed_input_never_panics() {
    let v = open(&[]).await;
    let good = ok(v.token_create("v".into(), PASSWORD.into(), JsValue::UNDEFINED)).await;
    let garbage: Vec<JsValue> = vec![
        JsValue::UNDEFINED,
        JsValue::NULL,
        JsValue::TRUE,
        JsValue::from_f64(f64::NAN),
        JsValue::from_f64(-1.0),
        JsValue::from_f64(1e300),
        JsValue::from_str(""),
        JsValue::from_str(&"x".repeat(10_000)),
        js_sys::Symbol::for_("s").into(),
        js_sys::BigInt::from(5).into(),
        Array::new().into(),
        Object::new().into(),
        obj(&[
            ("length", JsValue::from_str("x")),
            ("expiresAt", JsValue::from_str("tomorrow")),
        ]),
        Uint8Array::new_with_length(31).into(),
        js_sys::Function::new_no_args("return 1").into(),
        Date::new(&JsValue::from_f64(f64::NAN)).into(),
    ];
    for g in &garbage {
        // Each promise is awaited as soon as it is made: Node ends the process on a rejection
        // that has no handler by the next tick.
        let calls: Vec<Box<dyn Fn() -> Promise + '_>> = vec![
            Box::new(|| v.token_create(g.clone(), PASSWORD.into(), JsValue::UNDEFINED)),
            Box::new(|| v.token_create("v".into(), g.clone(), JsValue::UNDEFINED)),
            Box::new(|| v.token_create("v".into(), PASSWORD.into(), g.clone())),
            Box::new(|| v.tokens_create(g.clone(), PASSWORD.into(), JsValue::UNDEFINED)),
            Box::new(|| v.token_create_custom(g.clone(), "v".into(), PASSWORD.into(), g.clone())),
            Box::new(|| v.token_read(g.clone(), g.clone())),
            Box::new(|| v.tokens_read(g.clone(), PASSWORD.into())),
            Box::new(|| v.tokens_read_to_resolved_map(g.clone(), PASSWORD.into())),
            Box::new(|| v.token_update(good.clone(), g.clone(), PASSWORD.into())),
            Box::new(|| v.token_upsert(g.clone(), "v".into(), PASSWORD.into(), g.clone())),
            Box::new(|| v.token_exists(g.clone())),
            Box::new(|| v.token_renew(good.clone(), g.clone())),
            Box::new(|| v.token_soft_delete(g.clone())),
            Box::new(|| v.token_restore(g.clone())),
            Box::new(|| v.token_delete(g.clone())),
            Box::new(|| v.record_list(g.clone())),
            Box::new(|| v.record_count(g.clone())),
            Box::new(|| v.record_find_by_id(g.clone())),
            Box::new(|| v.record_find_by_token(g.clone())),
            Box::new(|| v.record_delete_by_id(g.clone())),
            Box::new(|| v.record_soft_delete_by_id(g.clone())),
            Box::new(|| v.bulk_rekey(g.clone(), PASSWORD.into(), g.clone())),
            Box::new(|| v.migrate_record_links(g.clone())),
            Box::new(|| v.get_vault_setting(g.clone())),
            Box::new(|| v.set_vault_setting(g.clone(), g.clone())),
            Box::new(|| v.set_vault_version(g.clone())),
            Box::new(|| JsVault::open(g.clone())),
        ];
        for call in calls {
            if let Err(e) = JsFuture::from(call()).await {
                assert_eq!(
                    get(&e, "name").as_string().as_deref(),
                    Some("VaultError"),
                    "{g:?}: {e:?}"
                );
            }
        }
        let mut q = JsRecordQuery::new(JsValue::UNDEFINED).unwrap();
        q.set_limit(g.clone());
        q.set_order_by(g.clone());
        let _ = q.validate();
        let _ = JsRecordQuery::new(g.clone());
    }
    assert_eq!(last_panic(), None);
    // Some garbage was valid input (tokenRenew(good, -1) expires it, a long string is a fine
    // value for tokenUpdate); make the token readable again and read it.
    ok(v.token_renew(good.clone(), JsValue::NULL)).await;
    ok(v.token_restore(good.clone())).await;
    assert!(
        ok(v.token_read(good, PASSWORD.into())).await.is_string(),
        "the vault still works"
    );
}

#[wasm_bindgen_test]
async fn a_hundred_concurrent_creates_on_one_vault() {
    let v = open(&[]).await;
    let creates: Vec<JsFuture> = (0..100)
        .map(|i| {
            JsFuture::from(v.token_create(
                format!("value {i}").into(),
                PASSWORD.into(),
                JsValue::UNDEFINED,
            ))
        })
        .collect();
    let tokens: Vec<JsValue> = join_all(creates)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        v.key_derivations(),
        1.0,
        "one derivation for 100 concurrent calls"
    );
    let reads: Vec<JsFuture> = tokens
        .iter()
        .map(|t| JsFuture::from(v.token_read(t.clone(), PASSWORD.into())))
        .collect();
    for (i, value) in join_all(reads).await.into_iter().enumerate() {
        assert_eq!(value.unwrap().as_string(), Some(format!("value {i}")));
    }
}

#[wasm_bindgen_test]
async fn webcrypto_and_rust_derive_the_same_keys() {
    let cases = [
        ("correct horse battery", [1u8; 16], 1_000),
        ("", [0u8; 16], 1_000),
        ("pässwörd 🔑 ünïcode", *b"0123456789abcdef", 2_500),
        (&"long".repeat(100) as &str, [255u8; 16], 4_096),
    ];
    for (password, salt, iterations) in cases {
        let params = KdfParams { iterations, salt };
        let web = WebCryptoKdf::derive_webcrypto(password, &params)
            .await
            .expect("Node 20 has WebCrypto PBKDF2");
        let rust = derive_password_key(password, &params);
        assert!(web == rust, "WebCrypto and Rust disagree for {password:?}");
        let other = derive_password_key("something else", &params);
        assert!(web != other, "the comparison can fail");
    }
}

#[wasm_bindgen_test]
async fn a_raw_key_must_be_32_bytes() {
    let v = open(&[]).await;
    let key = Uint8Array::new_with_length(32);
    key.fill(7, 0, 32);
    let t = ok(v.token_create("raw".into(), key.clone().into(), JsValue::UNDEFINED)).await;
    assert_eq!(
        ok(v.token_read(t.clone(), key.into()))
            .await
            .as_string()
            .as_deref(),
        Some("raw")
    );
    rejects(
        v.token_read(t, Uint8Array::new_with_length(16).into()),
        "INVALID_ARGUMENT",
    )
    .await;
}

/// The memory engine's allocator grows linear memory by an eighth of it at least
/// (src/wasm_alloc.rs). 64 MiB taken a kilobyte at a time, as a vault's rows are, then takes a
/// few dozen `memory.grow`s. The standard library's dlmalloc took one per 64 KiB page (a thousand
/// here), and each one detaches JavaScript's views of memory and prompts V8 to collect garbage:
/// the first 100,000-record build in a process took 3.2 s instead of 2.0 s.
#[wasm_bindgen_test]
fn the_heap_grows_in_a_few_large_steps() {
    use core::arch::wasm32::memory_size;
    let start = memory_size::<0>();
    let target = start + 1024;
    let mut last = start;
    let mut grows = 0;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    while memory_size::<0>() < target {
        blocks.push(vec![1; 1024]);
        let now = memory_size::<0>();
        if now != last {
            grows += 1;
            last = now;
        }
    }
    assert!(blocks.iter().all(|b| b.len() == 1024));
    assert!(
        (1..=64).contains(&grows),
        "64 MiB took {grows} memory.grow steps from {start} pages"
    );
}
