//! The `request_logs` table: one row per execute or passthrough call, never params or secrets.

use crate::vault::logs::{LogFilter, RequestLog};
use rusqlite::Connection;

pub(super) fn insert(conn: &Connection, rows: &[RequestLog]) -> anyhow::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO request_logs (transaction_key, created_at_ms, key_id, key_prefix, environment, integration,
            endpoint, connection_key, http_status, upstream_status, outcome, duration_us, request_bytes, response_bytes,
            request_id, counted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    for row in rows {
        insert.execute(rusqlite::params![
            row.transaction_key,
            row.created_at_ms,
            row.key_id,
            row.key_prefix,
            row.environment,
            row.integration,
            row.endpoint,
            row.connection_key,
            row.http_status,
            row.upstream_status,
            row.outcome,
            row.duration_us as i64,
            row.request_bytes as i64,
            row.response_bytes as i64,
            row.request_id,
            row.counted
        ])?;
    }
    Ok(())
}

pub(super) fn list(
    conn: &Connection,
    filter: &LogFilter,
    page: u32,
    limit: u32,
) -> anyhow::Result<(Vec<RequestLog>, i64)> {
    // Lists travel as JSON arrays; an empty one is no filter.
    let condition = "(?1 IS NULL OR environment = ?1) AND (?2 IS NULL OR integration IN (SELECT value FROM json_each(?2)))
         AND (?3 IS NULL OR endpoint IN (SELECT value FROM json_each(?3)))
         AND (?4 IS NULL OR outcome = ?4) AND (?5 IS NULL OR key_prefix = ?5)
         AND (?6 IS NULL OR transaction_key = ?6) AND (?7 IS NULL OR created_at_ms >= ?7)
         AND (?8 IS NULL OR integration IN (SELECT value FROM json_each(?8)) OR key_id = ?9)
         AND (?10 IS NULL OR request_id = ?10) AND (?11 IS NULL OR id < ?11)
         AND (?12 IS NULL OR upstream_status BETWEEN ?12 AND ?13)
         AND (?14 IS NULL OR connection_key IN (SELECT value FROM json_each(?14)))";
    let scope = filter
        .visible_to
        .as_ref()
        .map(|reader| serde_json::to_string(&reader.integrations))
        .transpose()?;
    let integrations = super::json_list(&filter.integrations)?;
    let endpoints = super::json_list(&filter.endpoints)?;
    let connection_keys = super::json_list(&filter.connection_keys)?;
    let params = rusqlite::params![
        filter.environment,
        integrations,
        endpoints,
        filter.outcome,
        filter.key_prefix,
        filter.transaction_key,
        filter.since_ms,
        scope,
        filter.visible_to.as_ref().map(|reader| reader.key_id),
        filter.request_id,
        filter.before_id,
        filter.upstream_status.map(|(low, _)| low),
        filter.upstream_status.map(|(_, high)| high),
        connection_keys
    ];
    let total: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM request_logs WHERE {condition}"),
        params,
        |r| r.get(0),
    )?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(limit);
    let mut statement = conn.prepare(&format!(
        "SELECT transaction_key, created_at_ms, key_id, key_prefix, environment, integration, endpoint,
                connection_key, http_status, upstream_status, outcome, duration_us, request_bytes, response_bytes,
                request_id, id
         FROM request_logs WHERE {condition} ORDER BY id DESC LIMIT {limit} OFFSET {offset}"
    ))?;
    let rows = statement
        .query_map(params, |r| {
            Ok(RequestLog {
                id: Some(r.get(15)?),
                transaction_key: r.get(0)?,
                request_id: r.get(14)?,
                created_at_ms: r.get(1)?,
                key_id: r.get(2)?,
                key_prefix: r.get(3)?,
                environment: r.get(4)?,
                integration: r.get(5)?,
                endpoint: r.get(6)?,
                connection_key: r.get(7)?,
                http_status: r.get(8)?,
                upstream_status: r.get(9)?,
                outcome: r.get(10)?,
                duration_us: r.get::<_, i64>(11)? as u64,
                request_bytes: r.get::<_, i64>(12)? as u64,
                response_bytes: r.get::<_, i64>(13)? as u64,
                reply_is_final: false,
                counted: false,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((rows, total))
}

pub(super) fn count_since(
    conn: &Connection,
    key_id: i64,
    since_ms: i64,
    not_counted: &[&str],
) -> anyhow::Result<u64> {
    // A row says whether its call was counted. Rows written before they said so (`counted`
    // NULL) are judged by their outcome: `not_counted` outcomes were not, and neither was a
    // passthrough call refused before it named a usable connection (no connection key: a
    // missing header).
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM request_logs WHERE key_id = ?1 AND created_at_ms >= ?2
           AND (counted = 1 OR (counted IS NULL
             AND outcome NOT IN (SELECT value FROM json_each(?3))
             AND NOT (endpoint = 'passthrough' AND connection_key IS NULL AND outcome = 'bad_request')))",
        rusqlite::params![key_id, since_ms, serde_json::to_string(not_counted)?],
        |r| r.get(0),
    )?;
    Ok(count as u64)
}

/// Rows [`prune`] deletes in one transaction at most.
pub(super) const PRUNE_BATCH: usize = 5_000;

/// Delete up to [`PRUNE_BATCH`] rows written before `before_ms`; returns how many.
pub(super) fn prune(conn: &Connection, before_ms: i64) -> anyhow::Result<usize> {
    Ok(conn.execute(
        "DELETE FROM request_logs WHERE rowid IN
             (SELECT rowid FROM request_logs WHERE created_at_ms < ?1 LIMIT ?2)",
        rusqlite::params![before_ms, PRUNE_BATCH as i64],
    )?)
}
