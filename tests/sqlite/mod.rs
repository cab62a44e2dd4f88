//! A native `SqlExecutor` on SQLite itself (rusqlite, SQLite compiled in): what D1, Durable
//! Objects and libSQL run, for the SQL backend's native tests and benchmark.
#![allow(dead_code)]

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, TransactionBehavior, params_from_iter};
use std::sync::Mutex;
use std::time::Duration;
use vaultstore_wasm::storage::sql::{SqlError, SqlExecutor, SqlValue, Statement};

/// One connection; a batch is one `BEGIN IMMEDIATE` transaction, so connections to one file
/// write one after the other, as D1 and libSQL do.
pub struct Sqlite {
    conn: Mutex<Connection>,
}

impl Sqlite {
    pub fn memory() -> Self {
        Self::from(Connection::open_in_memory().expect("SQLite opens in memory"))
    }

    /// A connection to a database file, shared with any other connection to it.
    pub fn file(path: &std::path::Path) -> Self {
        let conn = Connection::open(path).expect("SQLite opens a file");
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        // Two connections switching a new file to WAL at once: one may get SQLITE_BUSY without
        // the busy handler being asked (SQLite refuses to wait there, to avoid a deadlock).
        for attempt in 0.. {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && attempt < 100 =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("SQLite could not switch to WAL: {e}"),
            }
        }
        // Tests need atomicity and isolation between connections, not durability on power loss.
        conn.pragma_update(None, "synchronous", "OFF").unwrap();
        Self::from(conn)
    }

    /// Run raw SQL on the connection (tests that inspect or damage the tables).
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.conn.lock().unwrap())
    }
}

impl From<Connection> for Sqlite {
    fn from(conn: Connection) -> Self {
        Sqlite {
            conn: Mutex::new(conn),
        }
    }
}

fn to_sql(v: &SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(n) => Value::Integer(*n),
        SqlValue::Text(s) => Value::Text(s.clone()),
        SqlValue::Blob(b) => Value::Blob(b.clone()),
    }
}

fn from_sql(v: ValueRef<'_>) -> SqlValue {
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(n) => SqlValue::Integer(n),
        // Never produced by the backend's statements; kept exact where representable.
        ValueRef::Real(f) => SqlValue::Integer(f as i64),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

fn error(e: rusqlite::Error) -> SqlError {
    SqlError {
        original: Default::default(),
        name: Some("SqliteError".into()),
        message: e.to_string(),
    }
}

#[async_trait::async_trait]
impl SqlExecutor for Sqlite {
    async fn all(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError> {
        let conn = self.conn.lock().unwrap();
        let mut statement = conn.prepare(sql).map_err(error)?;
        let columns = statement.column_count();
        let rows = statement
            .query_map(params_from_iter(params.iter().map(to_sql)), |row| {
                (0..columns)
                    .map(|i| row.get_ref(i).map(from_sql))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(error)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(error)
    }

    async fn batch(&self, statements: Vec<Statement>) -> Result<(), SqlError> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(error)?;
        for s in &statements {
            tx.execute(&s.sql, params_from_iter(s.params.iter().map(to_sql)))
                .map_err(error)?;
        }
        tx.commit().map_err(error)
    }
}
