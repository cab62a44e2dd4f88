//! Record queries, lookups, deletes and expiry purges (API.md "Records and queries").
#![cfg(all(feature = "gluesql", not(target_arch = "wasm32")))]

mod common;

use common::*;
use vaultstore_wasm::{CreateOptions, ErrorCode, NotFoundReason, RecordQuery};

fn q() -> RecordQuery {
    RecordQuery::default()
}

#[test]
fn list_orders_filters_and_pages() {
    run(async {
        let (v, clock) = vault_with(options()).await;
        let mut tokens = Vec::new();
        for i in 0..6 {
            let expires = if i % 2 == 0 {
                None
            } else {
                Some(T0 + 1000 - i)
            };
            tokens.push(
                v.token_create(
                    &format!("v{i}"),
                    &pw(PASSWORD),
                    &CreateOptions {
                        length: None,
                        expires_at: expires,
                    },
                )
                .await
                .unwrap(),
            );
            clock.advance(10);
        }
        // Default: created_at descending, soft-deleted left out.
        v.token_soft_delete(&tokens[0]).await.unwrap();
        let list = v.record_list(&q()).await.unwrap();
        assert_eq!(
            list.iter().map(|r| r.token.clone()).collect::<Vec<_>>(),
            tokens[1..].iter().rev().cloned().collect::<Vec<_>>()
        );
        assert!(
            list.iter().all(|r| r.value.starts_with("vs1:")),
            "values stay encrypted"
        );

        let asc = v
            .record_list(&RecordQuery {
                sort_order: Some("asc".into()),
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(asc.first().unwrap().token, tokens[1]);
        let by_expiry = v
            .record_list(&RecordQuery {
                order_by: Some("expires_at".into()),
                sort_order: Some("asc".into()),
                ..q()
            })
            .await
            .unwrap();
        let expiries: Vec<_> = by_expiry.iter().map(|r| r.expires_at).collect();
        assert_eq!(
            expiries,
            vec![Some(T0 + 995), Some(T0 + 997), Some(T0 + 999), None, None],
            "no expiry sorts last ascending"
        );
        let page = v
            .record_list(&RecordQuery {
                limit: Some(2),
                offset: Some(1),
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|r| r.token.clone()).collect::<Vec<_>>(),
            vec![tokens[4].clone(), tokens[3].clone()]
        );
        assert_eq!(
            v.record_list(&RecordQuery {
                limit: Some(0),
                ..q()
            })
            .await
            .unwrap()
            .len(),
            5,
            "limit 0 means no limit"
        );

        let with_deleted = v
            .record_list(&RecordQuery {
                soft_deleted_include: true,
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(with_deleted.len(), 6);
        let only_deleted = v
            .record_list(&RecordQuery {
                soft_deleted_only: true,
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(only_deleted.len(), 1);
        assert!(only_deleted[0].soft_deleted_at.is_some());

        let picked = v
            .record_list(&RecordQuery {
                token_in: Some(vec![tokens[2].clone(), tokens[3].clone(), "tk_x".into()]),
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(picked.len(), 2);
        assert!(
            v.record_list(&RecordQuery {
                token_in: Some(vec![]),
                ..q()
            })
            .await
            .unwrap()
            .is_empty()
        );
        assert!(
            v.record_list(&RecordQuery {
                id_in: Some(vec![]),
                ..q()
            })
            .await
            .unwrap()
            .is_empty()
        );
        let one = v
            .record_list(&RecordQuery {
                id: Some(picked[0].id.clone()),
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(one, vec![picked[0].clone()]);

        clock.set(T0 + 998);
        let expired = v
            .record_list(&RecordQuery {
                expired_only: true,
                ..q()
            })
            .await
            .unwrap();
        assert_eq!(
            expired.iter().map(|r| r.expires_at).collect::<Vec<_>>(),
            vec![Some(T0 + 995), Some(T0 + 997)],
            "newest first"
        );
    });
}

#[test]
fn count_ignores_paging_and_list_refuses_count_only() {
    run(async {
        let v = vault().await;
        let values: Vec<String> = (0..7).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        v.tokens_create(&refs, &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(v.record_count(&q()).await.unwrap(), 7);
        assert_eq!(
            v.record_count(&RecordQuery {
                limit: Some(2),
                offset: Some(1),
                order_by: Some("token".into()),
                ..q()
            })
            .await
            .unwrap(),
            7
        );
        assert_eq!(
            v.record_count(&RecordQuery {
                count_only: true,
                ..q()
            })
            .await
            .unwrap(),
            7
        );
        code(
            v.record_list(&RecordQuery {
                count_only: true,
                ..q()
            })
            .await,
            ErrorCode::InvalidArgument,
        );
        code(
            v.record_count(&RecordQuery {
                count_only: true,
                limit: Some(3),
                ..q()
            })
            .await,
            ErrorCode::InvalidArgument,
        );
    });
}

#[test]
fn bad_queries_are_invalid_arguments() {
    run(async {
        let v = vault().await;
        for bad in [
            RecordQuery {
                limit: Some(-1),
                ..q()
            },
            RecordQuery {
                offset: Some(-5),
                ..q()
            },
            RecordQuery {
                order_by: Some("value".into()),
                ..q()
            },
            RecordQuery {
                sort_order: Some("sideways".into()),
                ..q()
            },
            RecordQuery {
                token: Some(String::new()),
                ..q()
            },
        ] {
            code(v.record_list(&bad).await, ErrorCode::InvalidArgument);
            code(v.record_count(&bad).await, ErrorCode::InvalidArgument);
        }
    });
}

#[test]
fn find_and_delete_by_id_and_token() {
    run(async {
        let v = vault().await;
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        let r = v.record_find_by_token(&t).await.unwrap().unwrap();
        assert_eq!(v.record_find_by_id(&r.id).await.unwrap(), Some(r.clone()));
        assert_eq!(v.record_find_by_id("nope").await.unwrap(), None);
        assert_eq!(v.record_find_by_token("tk_nope").await.unwrap(), None);
        code(v.record_find_by_id("").await, ErrorCode::InvalidArgument);

        v.record_soft_delete_by_id(&r.id).await.unwrap();
        assert_eq!(
            v.record_find_by_id(&r.id).await.unwrap(),
            None,
            "soft-deleted records are not found"
        );
        assert_eq!(v.record_find_by_token(&t).await.unwrap(), None);
        v.token_restore(&t).await.unwrap();
        v.record_soft_delete_by_token(&t).await.unwrap();
        assert!(!v.token_exists(&t).await.unwrap());
        let e = code(
            v.record_soft_delete_by_id("nope").await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason(), Some(NotFoundReason::Missing));
        code(
            v.record_soft_delete_by_token("tk_nope").await,
            ErrorCode::RecordNotFound,
        );

        v.record_delete_by_id(&r.id).await.unwrap();
        assert_eq!(
            v.record_count(&RecordQuery {
                soft_deleted_include: true,
                ..q()
            })
            .await
            .unwrap(),
            0
        );
        v.record_delete_by_id(&r.id).await.unwrap();
        v.record_delete_by_token("tk_nope").await.unwrap();
        let t2 = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        v.record_delete_by_token(&t2).await.unwrap();
        assert!(!v.token_exists(&t2).await.unwrap());
    });
}

#[test]
fn expired_purges_page_through_everything() {
    run(async {
        let (v, clock) = vault_with(options()).await;
        // More than one purge page (500) of expired records, some soft-deleted, plus live ones.
        let values: Vec<String> = (0..1234).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let expiring = v
            .tokens_create(
                &refs,
                &pw(PASSWORD),
                &CreateOptions {
                    length: None,
                    expires_at: Some(T0 + 5),
                },
            )
            .await
            .unwrap();
        let live = v
            .tokens_create(
                &refs[..10],
                &pw(PASSWORD),
                &CreateOptions {
                    length: None,
                    expires_at: Some(T0 + 10_000),
                },
            )
            .await
            .unwrap();
        let forever = v
            .token_create("forever", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        for t in &expiring[..3] {
            v.token_soft_delete(t).await.unwrap();
        }
        clock.advance(6);
        assert_eq!(v.tokens_expired_soft_delete().await.unwrap(), 1231);
        assert_eq!(
            v.tokens_expired_soft_delete().await.unwrap(),
            0,
            "nothing left to soft-delete"
        );
        assert_eq!(v.record_count(&q()).await.unwrap(), 11);
        assert_eq!(
            v.tokens_expired_delete().await.unwrap(),
            1234,
            "soft-deleted or not"
        );
        assert_eq!(v.tokens_expired_delete().await.unwrap(), 0);
        assert_eq!(
            v.record_count(&RecordQuery {
                soft_deleted_include: true,
                ..q()
            })
            .await
            .unwrap(),
            11
        );
        assert_eq!(v.token_read(&live[0], &pw(PASSWORD)).await.unwrap(), "0");
        assert_eq!(
            v.token_read(&forever, &pw(PASSWORD)).await.unwrap(),
            "forever"
        );
    });
}
