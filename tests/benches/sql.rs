//! `cargo bench --bench sql`: the SQL backend on SQLite (a database file, rusqlite) as the vault
//! grows from 1,000 to 100,000 to 1,000,000 records (issue 16, "a million records"). Reads of one
//! token and a page of a listing go through indexes, so they should cost about the same at every
//! size; the last column is the growth from 100,000 to 1,000,000.
//!
//! Each size is one vault with password identities on, filled with one secret (`tokensCreate` in
//! batches of 10,000). Then, in order: `tokenRead`, `recordList` pages (the middle one again
//! with 100 records soft-deleted, then the trash view's first page with 1% of the vault more
//! soft-deleted, all restored after), `recordCount`,
//! `tokenCreate`, `tokenRenew`; an expiry purge (`tokensExpiredDelete`) of 100,000 records created
//! already expired on top of the vault (as many as the vault holds when it is smaller); a password
//! change (`bulkRekey` to a secret with no identity: a re-wrap); and a rotation
//! (`bulkRekey` with `rotate: true`) of every record of the vault. Peak RSS is the process's
//! VmHWM, reset (`/proc/self/clear_refs`) before each size and before the rotation, so each
//! figure is that size's (or that rotation's) own.
//!
//! `VAULTSTORE_BENCH_SIZES=1000,100000` picks the sizes (default `1000,100000,1000000`);
//! `VAULTSTORE_BENCH_CACHE_MIB=256` gives SQLite that page cache (default: SQLite's own, 2 MiB).
//! Wall-clock medians of 101 runs for point operations, one run for bulk ones, on a shared
//! machine; compare runs on the same machine only.
#![allow(clippy::disallowed_methods)] // clippy.toml's one-sort rule is for the engine's download size

#[path = "../sqlite/mod.rs"]
mod sqlite;

use sqlite::Sqlite;
use std::time::{Duration, Instant};
use vaultstore_wasm::storage::sql::SqlStorage;
use vaultstore_wasm::{CreateOptions, RecordQuery, RekeyOptions, Secret, Vault, VaultOptions};

/// Records created already expired for the purge row (fewer when the vault is smaller).
const PURGED: usize = 100_000;
/// Values per `tokensCreate` call while filling.
const FILL_BATCH: usize = 10_000;

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

/// `count` records `"{prefix} {i}"` created in batches of [`FILL_BATCH`]: their tokens.
async fn fill_batches(
    vault: &Vault,
    key: &Secret,
    prefix: &str,
    count: usize,
    options: &CreateOptions,
) -> Vec<String> {
    let mut tokens = Vec::with_capacity(count);
    while tokens.len() < count {
        let values: Vec<String> = (tokens.len()..count.min(tokens.len() + FILL_BATCH))
            .map(|i| format!("{prefix} {i}"))
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        tokens.extend(
            vault
                .tokens_create(&refs, key, options)
                .await
                .expect("fill"),
        );
    }
    tokens
}

/// One run of `f`, with what it returned.
async fn once<T>(f: impl AsyncFnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let out = f().await;
    (started.elapsed(), out)
}

/// A line of `/proc/self/status` in bytes (`VmHWM`: peak resident set; `VmRSS`: now).
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Start a new peak: VmHWM becomes the current RSS (Linux `clear_refs` value 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// What a row shows at one size.
#[derive(Clone, Copy)]
enum Figure {
    Time(Duration),
    Bytes(u64),
    None,
}

impl Figure {
    fn value(self) -> Option<f64> {
        match self {
            Figure::Time(d) => Some(d.as_secs_f64()),
            Figure::Bytes(b) => Some(b as f64),
            Figure::None => None,
        }
    }
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Figure::Time(d) => f.pad(&format!("{d:.2?}")),
            Figure::Bytes(b) => f.pad(&format!("{:.0} MiB", *b as f64 / (1024.0 * 1024.0))),
            Figure::None => f.pad("-"),
        }
    }
}

const ROWS: &[&str] = &[
    "fill (build)",
    "tokenRead p50",
    "recordList 20, first page",
    "recordList 20, offset n/2",
    "recordList 20, last page",
    "offset n/2, 100 in trash",
    "trash view, n/100 in trash",
    "recordCount",
    "tokenCreate p50",
    "tokenRenew p50",
    "purge expired (see note)",
    "password change (re-wrap)",
    "rotation, every record",
    "peak RSS, whole size",
    "peak RSS, rotation",
];

fn sizes() -> Vec<usize> {
    match std::env::var("VAULTSTORE_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim().replace('_', "").parse().unwrap_or_else(|_| {
                    panic!("VAULTSTORE_BENCH_SIZES: {s:?} is not a record count")
                })
            })
            .collect(),
        Err(_) => vec![1_000, 100_000, 1_000_000],
    }
}

/// SQLite's page cache for the vault's connection, in MiB (`VAULTSTORE_BENCH_CACHE_MIB`);
/// `None`: SQLite's default (2 MiB), as libSQL and a plain SQLite file have it.
fn cache_mib() -> Option<u64> {
    let mib = std::env::var("VAULTSTORE_BENCH_CACHE_MIB").ok()?;
    Some(
        mib.trim().parse().unwrap_or_else(|_| {
            panic!("VAULTSTORE_BENCH_CACHE_MIB: {mib:?} is not a number of MiB")
        }),
    )
}

/// Every row of [`ROWS`] for a vault of `n` records in `dir`.
async fn measure(dir: &std::path::Path, n: usize) -> Vec<Figure> {
    reset_peak();
    let path = dir.join(format!("{n}.db"));
    let db = Sqlite::file(&path);
    if let Some(mib) = cache_mib() {
        db.with(|c| c.pragma_update(None, "cache_size", -(mib as i64) * 1024))
            .expect("cache_size");
    }
    let storage = SqlStorage::open(db, "vaultstore").await.expect("open");
    let vault = Vault::open(
        Box::new(storage),
        VaultOptions {
            password_identity: true,
            ..VaultOptions::default()
        },
    )
    .await
    .expect("vault");
    let old = Secret::raw_key(&[7u8; 32]).expect("a 32-byte key");
    let new = Secret::raw_key(&[8u8; 32]).expect("a 32-byte key");
    let rotated = Secret::raw_key(&[9u8; 32]).expect("a 32-byte key");

    let (fill, tokens) =
        once(async || fill_batches(&vault, &old, "value", n, &CreateOptions::default()).await)
            .await;
    eprintln!("{n}: filled in {fill:.2?}");
    let step = n / 101;
    let read = time(async |i| {
        vault
            .token_read(&tokens[i * step], &old)
            .await
            .expect("read");
    })
    .await;
    let page = |offset: usize| RecordQuery {
        limit: Some(20),
        offset: Some(offset as i64),
        ..RecordQuery::default()
    };
    let first = page(0);
    let list_first = time(async |_| {
        assert_eq!(vault.record_list(&first).await.expect("list").len(), 20);
    })
    .await;
    let deep = page(n / 2);
    let list_deep = time(async |_| {
        assert_eq!(vault.record_list(&deep).await.expect("list").len(), 20);
    })
    .await;
    // Past the middle: stepped to from the index's far end.
    let last = page(n - 20);
    let list_last = time(async |_| {
        assert_eq!(vault.record_list(&last).await.expect("list").len(), 20);
    })
    .await;
    // The same middle page of live records while 100 others are soft-deleted (then restored,
    // so the rows below see the vault as before): the listing leaves the trash out.
    let trashed: Vec<&String> = (0..100).map(|i| &tokens[i * step]).collect();
    for token in &trashed {
        vault.token_soft_delete(token).await.expect("soft delete");
    }
    let deep_live = page((n - trashed.len()) / 2);
    let list_deep_trash = time(async |_| {
        assert_eq!(vault.record_list(&deep_live).await.expect("list").len(), 20);
    })
    .await;
    // The trash view's first page once 1% of the vault more is soft-deleted (1,100 records in
    // the trash at 100,000), then every one restored.
    let more: Vec<&String> = (0..n / 100)
        .map(|i| &tokens[i * 100 + 1])
        .filter(|t| !trashed.contains(t))
        .collect();
    for token in &more {
        vault.token_soft_delete(token).await.expect("soft delete");
    }
    let trash_view = RecordQuery {
        limit: Some(20),
        soft_deleted_only: true,
        ..RecordQuery::default()
    };
    let list_trash = time(async |_| {
        assert_eq!(
            vault.record_list(&trash_view).await.expect("list").len(),
            20
        );
    })
    .await;
    for token in trashed.iter().chain(&more) {
        vault.token_restore(token).await.expect("restore");
    }
    // A point read like the others: the median of 101 (one run measured a cold page cache
    // after the deep page, 2.1-2.4x more at a million records than at 100,000).
    let count_time = time(async |_| {
        let count = vault
            .record_count(&RecordQuery::default())
            .await
            .expect("count");
        assert_eq!(count as usize, n);
    })
    .await;
    let create = time(async |_| {
        vault
            .token_create("4111 1111 1111 1111", &old, &CreateOptions::default())
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
    drop(tokens);
    let live = n + 101;

    // Records that expired a second ago, on top of the vault, then purged (not timed: the fill).
    let purged = PURGED.min(n);
    let expired = CreateOptions {
        expires_at: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("a clock after 1970")
                .as_millis() as i64
                - 1_000,
        ),
        ..CreateOptions::default()
    };
    fill_batches(&vault, &old, "expired", purged, &expired).await;
    let (purge, gone) = once(async || vault.tokens_expired_delete().await.expect("purge")).await;
    assert_eq!(gone as usize, purged);
    eprintln!("{n}: purged {purged} in {purge:.2?}");

    let (rewrap, moved) = once(async || {
        vault
            .bulk_rekey(&old, &new, &RekeyOptions::default())
            .await
            .expect("re-wrap")
    })
    .await;
    assert_eq!(moved as usize, live);
    eprintln!("{n}: re-wrapped in {rewrap:.2?}");

    let peak_before_rotation = status_bytes("VmHWM:");
    reset_peak();
    // What the process holds when the rotation starts: its peak less this is the rotation's own.
    if let Some(rss) = status_bytes("VmRSS:") {
        eprintln!("{n}: {} MiB resident before the rotation", rss >> 20);
    }
    let (rotation, moved) = once(async || {
        vault
            .bulk_rekey(
                &new,
                &rotated,
                &RekeyOptions {
                    rotate: true,
                    observer: None,
                },
            )
            .await
            .expect("rotation")
    })
    .await;
    assert_eq!(moved as usize, live);
    let rotation_peak = status_bytes("VmHWM:");
    eprintln!("{n}: rotated {moved} in {rotation:.2?}");
    // Spot check: a record the rotation moved opens with the new secret only.
    let sample = vault
        .record_list(&page(n / 3))
        .await
        .expect("list")
        .remove(0);
    assert!(vault.token_read(&sample.token, &rotated).await.is_ok());
    assert!(vault.token_read(&sample.token, &new).await.is_err());

    let bytes = |b: Option<u64>| b.map_or(Figure::None, Figure::Bytes);
    let figures = vec![
        Figure::Time(fill),
        Figure::Time(read),
        Figure::Time(list_first),
        Figure::Time(list_deep),
        Figure::Time(list_last),
        Figure::Time(list_deep_trash),
        Figure::Time(list_trash),
        Figure::Time(count_time),
        Figure::Time(create),
        Figure::Time(renew),
        Figure::Time(purge),
        Figure::Time(rewrap),
        Figure::Time(rotation),
        bytes(
            status_bytes("VmHWM:")
                .max(rotation_peak)
                .max(peak_before_rotation),
        ),
        bytes(rotation_peak),
    ];
    drop(vault);
    let _ = std::fs::remove_file(&path);
    figures
}

fn main() {
    let sizes = sizes();
    let dir = std::env::temp_dir().join(format!("vaultstore-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut columns = Vec::new();
    for &n in &sizes {
        let started = Instant::now();
        columns.push(futures::executor::block_on(measure(&dir, n)));
        eprintln!("{n}: done in {:.1?}", started.elapsed());
    }
    let _ = std::fs::remove_dir_all(&dir);

    let growth_from = sizes.iter().position(|&n| n == 100_000);
    let growth_to = sizes.iter().position(|&n| n == 1_000_000);
    print!("{:<28}", "records");
    for n in &sizes {
        print!(" {n:>12}");
    }
    if growth_from.zip(growth_to).is_some() {
        print!(" {:>12}", "100k→1M");
    }
    println!();
    for (row, name) in ROWS.iter().enumerate() {
        print!("{name:<28}");
        for column in &columns {
            print!(" {:>12}", column[row]);
        }
        if let Some((from, to)) = growth_from.zip(growth_to) {
            match columns[from][row].value().zip(columns[to][row].value()) {
                Some((a, b)) if a > 0.0 => print!(" {:>11.2}×", b / a),
                _ => print!(" {:>12}", "-"),
            }
        }
        println!();
    }
    println!(
        "purge: {PURGED} records created already expired on top of the vault (as many as it holds when smaller), removed by tokensExpiredDelete"
    );
}
