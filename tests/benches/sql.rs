//! `cargo bench --bench sql`: the SQL backend on SQLite (a database file, rusqlite) as the vault
//! grows from 1,000 to 100,000 records. Reads of one token and a page of a listing go through
//! indexes, so they cost the same at both sizes; a count reads the whole index.
//!
//! Wall-clock medians on a shared 2-core machine; compare runs on the same machine only.

#[path = "../sqlite/mod.rs"]
mod sqlite;

use sqlite::Sqlite;
use std::time::{Duration, Instant};
use vaultstore_wasm::storage::sql::SqlStorage;
use vaultstore_wasm::{CreateOptions, RecordQuery, Secret, Vault, VaultOptions};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The median of 101 runs of `f(i)`.
async fn time<F: AsyncFnMut(usize)>(mut f: F) -> Duration {
    let mut samples = Vec::with_capacity(101);
    for i in 0..101 {
        let started = Instant::now();
        f(i).await;
        samples.push(started.elapsed());
    }
    median(samples)
}

fn main() {
    let dir = std::env::temp_dir().join(format!("vaultstore-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    futures::executor::block_on(async {
        let key = Secret::raw_key(&[7u8; 32]).expect("a 32-byte key");
        println!(
            "{:>8} {:>12} {:>14} {:>16} {:>14} {:>14} {:>12}",
            "records",
            "fill",
            "token read",
            "recordList 20",
            "token create",
            "token renew",
            "recordCount"
        );
        for n in [1_000usize, 100_000] {
            let storage =
                SqlStorage::open(Sqlite::file(&dir.join(format!("{n}.db"))), "vaultstore")
                    .await
                    .expect("open");
            let vault = Vault::open(Box::new(storage), VaultOptions::default())
                .await
                .expect("vault");
            let values: Vec<String> = (0..n).map(|i| format!("value {i}")).collect();
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let started = Instant::now();
            let mut tokens = Vec::with_capacity(n);
            for chunk in refs.chunks(10_000) {
                tokens.extend(
                    vault
                        .tokens_create(chunk, &key, &CreateOptions::default())
                        .await
                        .expect("fill"),
                );
            }
            let fill = started.elapsed();
            let step = n / 101;
            let read = time(async |i| {
                vault
                    .token_read(&tokens[i * step], &key)
                    .await
                    .expect("read");
            })
            .await;
            let page = RecordQuery {
                limit: Some(20),
                ..RecordQuery::default()
            };
            let list = time(async |_| {
                assert_eq!(vault.record_list(&page).await.expect("list").len(), 20);
            })
            .await;
            let create = time(async |_| {
                vault
                    .token_create("4111 1111 1111 1111", &key, &CreateOptions::default())
                    .await
                    .expect("create");
            })
            .await;
            let renew = time(async |i| {
                vault
                    .token_renew(&tokens[i * step], Some(4_102_444_800_000))
                    .await
                    .expect("renew");
            })
            .await;
            let started = Instant::now();
            let count = vault
                .record_count(&RecordQuery::default())
                .await
                .expect("count");
            let count_time = started.elapsed();
            assert_eq!(count as usize, n + 101);
            println!(
                "{n:>8} {fill:>12.2?} {read:>14.2?} {list:>16.2?} {create:>14.2?} {renew:>14.2?} {count_time:>12.2?}"
            );
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
