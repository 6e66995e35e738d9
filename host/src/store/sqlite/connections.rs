//! The `connections` table: one sealed secret per platform, environment and identity.

use crate::store::{ConnectionChanges, NewConnectionRow};
use crate::vault::api_keys::Environment;
use crate::vault::connections::{
    ConnectionFilter, ConnectionPage, ConnectionRecord, ConnectionSelector, PlanLimitReached, row_id,
};
use crate::vault::crypto::Sealed;
use anyhow::Context;
use rusqlite::{Connection, OptionalExtension};
use url::Url;

const COLUMNS: &str = "id, key, platform, environment, identity, identity_type, name, description, tags, \
     base_url, state, active, consecutive_auth_failures, created_at, updated_at, secret_nonce, secret_ciphertext, key_id, \
     token_expires_at, secret_stored_at";

/// Insert `row` unless `limit` is given and the environment already holds that many; the
/// caller runs this in one write transaction, so the count cannot go stale before the insert.
pub(super) fn insert_within_limit(
    conn: &Connection,
    row: &NewConnectionRow,
    limit: Option<u32>,
) -> anyhow::Result<Result<i64, PlanLimitReached>> {
    let environment = row.environment;
    if let Some(limit) = limit {
        let count: i64 = conn.query_row(
            "SELECT COUNT(*) FROM connections WHERE environment = ?1",
            [environment.as_str()],
            |r| r.get(0),
        )?;
        if count >= i64::from(limit) {
            return Ok(Err(PlanLimitReached { environment, limit }));
        }
    }
    // A public id (`conn_N`) is never given twice: an app that kept the id of a deleted
    // connection must not reach whoever's connection is made next. SQLite alone would reuse
    // the largest id once its row is deleted, so the largest ever given is kept in `meta`.
    let id: i64 = conn.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM connections), 0),
                    COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'last_connection_id'), 0)) + 1",
        [],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('last_connection_id', ?1)",
        [id.to_string()],
    )?;
    conn.execute(
        "INSERT INTO connections (id, key, platform, environment, identity, identity_type, name, description,
            tags, base_url, secret_nonce, secret_ciphertext, key_id, created_at, updated_at, token_expires_at,
            secret_stored_at)
         VALUES (?15, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14, ?13)",
        rusqlite::params![
            row.key,
            row.platform,
            environment.as_str(),
            row.identity,
            row.identity_type,
            row.name,
            row.description,
            serde_json::to_string(&row.tags)?,
            row.base_url.as_ref().map(Url::as_str),
            row.sealed.nonce,
            row.sealed.ciphertext,
            row.sealed.key_id,
            row.created_at,
            row.token_expires_at,
            id
        ],
    )?;
    Ok(Ok(id))
}

pub(super) fn find(
    conn: &Connection,
    platform: &str,
    environment: Environment,
    selector: &ConnectionSelector,
) -> anyhow::Result<Vec<ConnectionRecord>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM connections
         WHERE platform = ?1 AND environment = ?2 AND active = 1
           AND (?3 IS NULL OR key = ?3) AND (?4 IS NULL OR identity = ?4)
           AND (?5 IS NULL OR identity_type = ?5)
         ORDER BY id"
    ))?;
    let rows = statement.query_map(
        rusqlite::params![
            platform,
            environment.as_str(),
            selector.connection_key,
            selector.identity,
            selector.identity_type
        ],
        record_from_row,
    )?;
    rows.map(|row| row?.parse()).collect()
}

pub(super) fn list(
    conn: &Connection,
    environment: Environment,
    filter: &ConnectionFilter,
    page: u32,
    limit: u32,
) -> anyhow::Result<ConnectionPage> {
    let tags = serde_json::to_string(&filter.tags)?;
    let keys = super::json_list(&filter.keys)?;
    let platforms = super::json_list(&filter.platforms)?;
    let ids = match filter.ids.is_empty() {
        true => None,
        false => Some(serde_json::to_string(&filter.ids)?),
    };
    let in_scope = filter
        .platforms_in_scope
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    // Lists travel as JSON arrays. Tags are stored as one; every requested tag must be in it.
    // The scope is applied here, not to the page afterwards, so that totals and pages count
    // only what the caller may see.
    let condition = "environment = ?1
         AND (?2 IS NULL OR key IN (SELECT value FROM json_each(?2))) AND (?3 IS NULL OR platform IN (SELECT value FROM json_each(?3)))
         AND (?4 IS NULL OR identity = ?4) AND (?5 IS NULL OR identity_type = ?5)
         AND (?6 IS NULL OR active = ?6)
         AND NOT EXISTS (SELECT 1 FROM json_each(?7) AS wanted
                         WHERE wanted.value NOT IN (SELECT value FROM json_each(connections.tags)))
         AND (?8 IS NULL OR platform IN (SELECT value FROM json_each(?8)))
         AND (?9 IS NULL OR id IN (SELECT value FROM json_each(?9))) AND (?10 IS NULL OR name = ?10)
         AND (?11 IS NULL OR state = ?11)";
    let params = rusqlite::params![
        environment.as_str(),
        keys,
        platforms,
        filter.identity,
        filter.identity_type,
        filter.active,
        tags,
        in_scope,
        ids,
        filter.name,
        filter.state,
    ];
    let total: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM connections WHERE {condition}"),
        params,
        |r| r.get(0),
    )?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(limit);
    let mut statement = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM connections WHERE {condition} ORDER BY id DESC LIMIT {limit} OFFSET {offset}"
    ))?;
    let rows = statement
        .query_map(params, record_from_row)?
        .map(|row| row?.parse())
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ConnectionPage { rows, total })
}

pub(super) fn by_id_or_key(
    conn: &Connection,
    environment: Environment,
    id_or_key: &str,
) -> anyhow::Result<Option<ConnectionRecord>> {
    let row = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM connections WHERE environment = ?1 AND (id = ?2 OR key = ?3)"),
            rusqlite::params![environment.as_str(), row_id(id_or_key).unwrap_or(-1), id_or_key],
            record_from_row,
        )
        .optional()?;
    row.map(RawRecord::parse).transpose()
}

pub(super) fn by_id(conn: &Connection, id: i64) -> anyhow::Result<Option<ConnectionRecord>> {
    let row = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM connections WHERE id = ?1"),
            [id],
            record_from_row,
        )
        .optional()?;
    row.map(RawRecord::parse).transpose()
}

pub(super) fn update(
    conn: &Connection,
    id: i64,
    changes: &ConnectionChanges,
    at_us: i64,
) -> anyhow::Result<()> {
    let tags = changes.tags.as_ref().map(serde_json::to_string).transpose()?;
    let base_url_given = changes.base_url.is_some();
    let base_url = changes.base_url.clone().flatten().map(|u| u.to_string());
    let sealed = changes.sealed.as_ref();
    conn.execute(
        "UPDATE connections SET
            name = COALESCE(?2, name),
            description = COALESCE(?3, description),
            tags = COALESCE(?4, tags),
            active = COALESCE(?5, active),
            base_url = CASE WHEN ?6 THEN ?7 ELSE base_url END,
            secret_nonce = COALESCE(?8, secret_nonce),
            secret_ciphertext = COALESCE(?9, secret_ciphertext),
            key_id = CASE WHEN ?8 IS NULL THEN key_id ELSE ?10 END,
            state = CASE WHEN ?8 IS NULL THEN state ELSE 'operational' END,
            consecutive_auth_failures = CASE WHEN ?8 IS NULL THEN consecutive_auth_failures ELSE 0 END,
            token_expires_at = CASE WHEN ?8 IS NULL THEN token_expires_at ELSE NULL END,
            secret_stored_at = CASE WHEN ?8 IS NULL THEN secret_stored_at ELSE ?11 / 1000000 END,
            health_cleared_at_us = CASE WHEN ?8 IS NULL THEN health_cleared_at_us
                ELSE MAX(health_cleared_at_us, ?11) END,
            updated_at = ?11 / 1000000
         WHERE id = ?1",
        rusqlite::params![
            id,
            changes.name,
            changes.description,
            tags,
            changes.active,
            base_url_given,
            base_url,
            sealed.map(|s| &s.nonce),
            sealed.map(|s| &s.ciphertext),
            sealed.map(|s| &s.key_id),
            at_us
        ],
    )?;
    Ok(())
}

pub(super) fn delete(conn: &Connection, environment: Environment, id_or_key: &str) -> anyhow::Result<bool> {
    let deleted = conn.execute(
        "DELETE FROM connections WHERE environment = ?1 AND (id = ?2 OR key = ?3)",
        rusqlite::params![environment.as_str(), row_id(id_or_key).unwrap_or(-1), id_or_key],
    )?;
    Ok(deleted > 0)
}

pub(super) fn record_auth_failure(
    conn: &Connection,
    id: i64,
    failed_after: i64,
    sent_at_us: i64,
    at_us: i64,
) -> anyhow::Result<bool> {
    // Read and update in one transaction: it turned `failed` if it was not before and is now
    // (a refused refresh may have failed it already, with no 401 counted; a 401 does not make
    // a failed connection merely degraded). A 401 to a call sent before the newest success or
    // new secret says nothing of the credential now, and is not counted.
    let before: Option<String> = conn
        .query_row("SELECT state FROM connections WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    let after: Option<String> = conn
        .query_row(
            "UPDATE connections SET consecutive_auth_failures = consecutive_auth_failures + 1,
                state = CASE WHEN state = 'failed' OR consecutive_auth_failures + 1 >= ?2
                    THEN 'failed' ELSE 'degraded' END,
                health_failed_at_us = MAX(health_failed_at_us, ?3),
                updated_at = ?4 / 1000000
             WHERE id = ?1 AND ?3 >= health_cleared_at_us
             RETURNING state",
            rusqlite::params![id, failed_after, sent_at_us, at_us],
            |row| row.get(0),
        )
        .optional()?;
    Ok(after.as_deref() == Some("failed") && before.as_deref() != Some("failed"))
}

pub(super) fn record_auth_success(
    conn: &Connection,
    id: i64,
    sent_at_us: i64,
    at_us: i64,
) -> anyhow::Result<bool> {
    // Only the write that finds it failed says so: concurrent successes report it once. A
    // success of a call sent before the newest 401 (or refused refresh) does not clear it.
    let was_failed = conn
        .query_row(
            "SELECT state = 'failed' FROM connections WHERE id = ?1",
            [id],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(false);
    let changed = conn.execute(
        "UPDATE connections SET consecutive_auth_failures = 0, state = 'operational',
            health_cleared_at_us = MAX(health_cleared_at_us, ?2), updated_at = ?3 / 1000000
         WHERE id = ?1 AND ?2 >= health_failed_at_us",
        rusqlite::params![id, sent_at_us, at_us],
    )?;
    Ok(was_failed && changed > 0)
}

pub(super) fn replace_secret(
    conn: &Connection,
    id: i64,
    sealed: &Sealed,
    token_expires_at: Option<i64>,
    base_url: Option<&Url>,
    at_us: i64,
) -> anyhow::Result<()> {
    conn.execute(
        "UPDATE connections SET secret_nonce = ?2, secret_ciphertext = ?3, key_id = ?4,
            token_expires_at = ?5, state = 'operational', consecutive_auth_failures = 0,
            health_cleared_at_us = MAX(health_cleared_at_us, ?6), updated_at = ?6 / 1000000,
            secret_stored_at = ?6 / 1000000, base_url = COALESCE(?7, base_url)
         WHERE id = ?1",
        rusqlite::params![
            id,
            sealed.nonce,
            sealed.ciphertext,
            sealed.key_id,
            token_expires_at,
            at_us,
            base_url.map(Url::as_str)
        ],
    )?;
    Ok(())
}

pub(super) fn mark_failed(
    conn: &Connection,
    id: i64,
    secret_ciphertext: &[u8],
    at_us: i64,
) -> anyhow::Result<bool> {
    // The time is recorded even on a connection 401s failed already: a success of a call sent
    // before this must not make it operational.
    let was_failed: Option<bool> = conn
        .query_row(
            "SELECT state = 'failed' FROM connections WHERE id = ?1 AND secret_ciphertext = ?2",
            rusqlite::params![id, secret_ciphertext],
            |r| r.get(0),
        )
        .optional()?;
    conn.execute(
        "UPDATE connections SET state = 'failed', health_failed_at_us = MAX(health_failed_at_us, ?2),
            updated_at = ?2 / 1000000
         WHERE id = ?1 AND secret_ciphertext = ?3",
        rusqlite::params![id, at_us, secret_ciphertext],
    )?;
    Ok(was_failed == Some(false))
}

pub(super) fn store_refreshed_tokens(
    conn: &Connection,
    id: i64,
    previous_ciphertext: &[u8],
    sealed: &Sealed,
    token_expires_at: Option<i64>,
    at: i64,
) -> anyhow::Result<bool> {
    let changed = conn.execute(
        "UPDATE connections SET secret_nonce = ?3, secret_ciphertext = ?4, key_id = ?5, token_expires_at = ?6,
            updated_at = ?7, secret_stored_at = ?7
         WHERE id = ?1 AND secret_ciphertext = ?2",
        rusqlite::params![
            id,
            previous_ciphertext,
            sealed.nonce,
            sealed.ciphertext,
            sealed.key_id,
            token_expires_at,
            at
        ],
    )?;
    Ok(changed > 0)
}

pub(super) fn fail_with_secret(
    conn: &Connection,
    id: i64,
    previous_ciphertext: &[u8],
    sealed: &Sealed,
    at_us: i64,
) -> anyhow::Result<bool> {
    let was_failed: Option<bool> = conn
        .query_row(
            "SELECT state = 'failed' FROM connections WHERE id = ?1 AND secret_ciphertext = ?2",
            rusqlite::params![id, previous_ciphertext],
            |r| r.get(0),
        )
        .optional()?;
    let Some(was_failed) = was_failed else {
        return Ok(false);
    };
    conn.execute(
        "UPDATE connections SET secret_nonce = ?2, secret_ciphertext = ?3, key_id = ?4, state = 'failed',
            health_failed_at_us = MAX(health_failed_at_us, ?5), updated_at = ?5 / 1000000
         WHERE id = ?1",
        rusqlite::params![id, sealed.nonce, sealed.ciphertext, sealed.key_id, at_us],
    )?;
    Ok(!was_failed)
}

pub(super) fn sealed_with_other_keys(
    conn: &Connection,
    key_id: &str,
    limit: usize,
) -> anyhow::Result<Vec<(i64, String, Sealed)>> {
    let mut statement = conn.prepare(
        "SELECT id, key, key_id, secret_nonce, secret_ciphertext FROM connections
         WHERE key_id <> ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = statement
        .query_map(rusqlite::params![key_id, limit as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                Sealed {
                    key_id: r.get(2)?,
                    nonce: r.get(3)?,
                    ciphertext: r.get(4)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn replace_sealed_secrets(
    conn: &Connection,
    resealed: &[(i64, String, Sealed)],
) -> anyhow::Result<()> {
    for (id, previous_key_id, sealed) in resealed {
        // Skip rows changed meanwhile (e.g. a new secret written by a PATCH).
        conn.execute(
            "UPDATE connections SET secret_nonce = ?2, secret_ciphertext = ?3, key_id = ?4
             WHERE id = ?1 AND key_id = ?5",
            rusqlite::params![
                id,
                sealed.nonce,
                sealed.ciphertext,
                sealed.key_id,
                previous_key_id
            ],
        )?;
    }
    Ok(())
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: row.get(0)?,
        key: row.get(1)?,
        platform: row.get(2)?,
        environment: row.get(3)?,
        identity: row.get(4)?,
        identity_type: row.get(5)?,
        name: row.get(6)?,
        description: row.get(7)?,
        tags: row.get(8)?,
        base_url: row.get(9)?,
        state: row.get(10)?,
        active: row.get(11)?,
        consecutive_auth_failures: row.get(12)?,
        created_at: row.get(13)?,
        updated_at: row.get(14)?,
        nonce: row.get(15)?,
        ciphertext: row.get(16)?,
        key_id: row.get(17)?,
        token_expires_at: row.get(18)?,
        secret_stored_at: row.get(19)?,
    })
}

/// A row as SQLite returns it, before text columns are parsed.
struct RawRecord {
    id: i64,
    key: String,
    platform: String,
    environment: String,
    identity: Option<String>,
    identity_type: Option<String>,
    name: Option<String>,
    description: Option<String>,
    tags: String,
    base_url: Option<String>,
    state: String,
    active: bool,
    consecutive_auth_failures: i64,
    created_at: i64,
    updated_at: i64,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    key_id: String,
    token_expires_at: Option<i64>,
    secret_stored_at: i64,
}

impl RawRecord {
    fn parse(self) -> anyhow::Result<ConnectionRecord> {
        let base_url = self
            .base_url
            .map(|u| Url::parse(&u))
            .transpose()
            .with_context(|| format!("connection {} has an invalid base URL", self.key))?;
        Ok(ConnectionRecord {
            environment: self.environment.parse()?,
            tags: serde_json::from_str(&self.tags).unwrap_or_default(),
            id: self.id,
            key: self.key,
            platform: self.platform,
            identity: self.identity,
            identity_type: self.identity_type,
            name: self.name,
            description: self.description,
            base_url,
            state: self.state,
            active: self.active,
            consecutive_auth_failures: self.consecutive_auth_failures,
            token_expires_at: self.token_expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            secret_stored_at: self.secret_stored_at,
            sealed: Sealed {
                key_id: self.key_id,
                nonce: self.nonce,
                ciphertext: self.ciphertext,
            },
        })
    }
}
