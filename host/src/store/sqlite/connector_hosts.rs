//! The `connector_hosts` table: the outbound hosts approved per connector, as a JSON array.

use rusqlite::{Connection, OptionalExtension};

pub(super) fn approved(conn: &Connection, connector: &str) -> anyhow::Result<Option<Vec<String>>> {
    let hosts: Option<String> = conn
        .query_row(
            "SELECT hosts FROM connector_hosts WHERE connector = ?1",
            [connector],
            |r| r.get(0),
        )
        .optional()?;
    Ok(hosts.map(|h| serde_json::from_str(&h).unwrap_or_default()))
}

pub(super) fn all(conn: &Connection) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut statement = conn.prepare("SELECT connector, hosts FROM connector_hosts ORDER BY connector")?;
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .map(|(connector, hosts)| (connector, serde_json::from_str(&hosts).unwrap_or_default()))
        .collect())
}

pub(super) fn approve(conn: &Connection, connector: &str, hosts: &[String], at: i64) -> anyhow::Result<()> {
    conn.execute(
        "INSERT INTO connector_hosts (connector, hosts, approved_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (connector) DO UPDATE SET hosts = excluded.hosts, approved_at = excluded.approved_at",
        rusqlite::params![connector, serde_json::to_string(hosts)?, at],
    )?;
    Ok(())
}
