//! The `api_keys` table: keys stored only as their hash.

use crate::vault::api_keys::{ApiKey, Environment, KeyOptions, Scope};
use rusqlite::{Connection, OptionalExtension};

const COLUMNS: &str = "id, prefix, name, environment, scopes, created_at, revoked_at, expires_at, daily_quota, per_minute_limit, max_in_flight";

pub(super) fn insert(
    conn: &Connection,
    prefix: &str,
    hash: &[u8],
    options: &KeyOptions,
    created_at: i64,
) -> anyhow::Result<i64> {
    conn.execute(
        "INSERT INTO api_keys (prefix, hash, name, environment, scopes, created_at, expires_at, daily_quota,
            per_minute_limit, max_in_flight)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        rusqlite::params![
            prefix,
            hash,
            options.name,
            options.environment.as_str(),
            options.scope.to_string(),
            created_at,
            options.expires_at,
            options.daily_quota,
            options.per_minute_limit,
            options.max_in_flight
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn by_hash(conn: &Connection, hash: &[u8]) -> anyhow::Result<Option<ApiKey>> {
    let mut statement = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE hash = ?1"))?;
    let row = statement.query_row([hash], key_from_row).optional()?;
    row.map(finish).transpose()
}

pub(super) fn list(conn: &Connection) -> anyhow::Result<Vec<ApiKey>> {
    let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY id DESC"))?;
    let rows = statement.query_map([], key_from_row)?;
    rows.map(|row| finish(row?)).collect()
}

pub(super) fn revoke(conn: &Connection, prefix_or_id: &str, at: i64) -> anyhow::Result<Vec<i64>> {
    let id: i64 = prefix_or_id.parse().unwrap_or(-1);
    let mut matching = conn.prepare(
        "SELECT id FROM api_keys WHERE (prefix = ?1 OR id = ?2) AND revoked_at IS NULL ORDER BY id",
    )?;
    let matching = matching
        .query_map(rusqlite::params![prefix_or_id, id], |row| row.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    // Revoking cannot be undone: a prefix several keys share revokes none of them.
    if let [only] = matching.as_slice() {
        conn.execute(
            "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2",
            rusqlite::params![at, only],
        )?;
    }
    Ok(matching)
}

pub(super) fn count(conn: &Connection) -> anyhow::Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM api_keys", [], |r| r.get(0))?)
}

fn key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ApiKey, String, String)> {
    Ok((
        ApiKey {
            id: row.get(0)?,
            prefix: row.get(1)?,
            name: row.get(2)?,
            environment: Environment::Test,
            scope: Scope::All,
            created_at: row.get(5)?,
            revoked_at: row.get(6)?,
            expires_at: row.get(7)?,
            daily_quota: row.get(8)?,
            per_minute_limit: row.get(9)?,
            max_in_flight: row.get(10)?,
        },
        row.get(3)?,
        row.get(4)?,
    ))
}

/// Finish a row read by [`key_from_row`]: parse the text columns.
fn finish((mut key, environment, scopes): (ApiKey, String, String)) -> anyhow::Result<ApiKey> {
    key.environment = environment.parse()?;
    key.scope = Scope::parse(&scopes)?;
    Ok(key)
}
