//! The `oauth_apps` table: one OAuth client per integration, its secret sealed.

use crate::vault::crypto::Sealed;
use crate::vault::oauth_apps::OAuthApp;
use rusqlite::{Connection, OptionalExtension};
use url::Url;

const COLUMNS: &str = "platform, client_id, secret_nonce, secret_ciphertext, redirect_url, scopes, \
     authorize_url, token_url, created_at, key_id, updated_at";

pub(super) fn upsert(conn: &Connection, app: &OAuthApp) -> anyhow::Result<()> {
    conn.execute(
        "INSERT INTO oauth_apps (platform, client_id, secret_nonce, secret_ciphertext, key_id,
            redirect_url, scopes, authorize_url, token_url, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (platform) DO UPDATE SET client_id = excluded.client_id,
            secret_nonce = excluded.secret_nonce, secret_ciphertext = excluded.secret_ciphertext,
            key_id = excluded.key_id, redirect_url = excluded.redirect_url, scopes = excluded.scopes,
            authorize_url = excluded.authorize_url, token_url = excluded.token_url,
            updated_at = excluded.updated_at",
        rusqlite::params![
            app.platform,
            app.client_id,
            app.sealed.nonce,
            app.sealed.ciphertext,
            app.sealed.key_id,
            app.redirect_url.as_ref().map(Url::as_str),
            serde_json::to_string(&app.scopes)?,
            app.authorize_url.as_ref().map(Url::as_str),
            app.token_url.as_ref().map(Url::as_str),
            app.created_at,
            app.updated_at
        ],
    )?;
    Ok(())
}

pub(super) fn by_platform(conn: &Connection, platform: &str) -> anyhow::Result<Option<OAuthApp>> {
    let app = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM oauth_apps WHERE platform = ?1"),
            [platform],
            app_from_row,
        )
        .optional()?;
    Ok(app)
}

pub(super) fn list(conn: &Connection) -> anyhow::Result<Vec<OAuthApp>> {
    let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM oauth_apps ORDER BY platform"))?;
    let apps = statement
        .query_map([], app_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(apps)
}

pub(super) fn delete(conn: &Connection, platform: &str) -> anyhow::Result<bool> {
    Ok(conn.execute("DELETE FROM oauth_apps WHERE platform = ?1", [platform])? > 0)
}

pub(super) fn replace_secret(
    conn: &Connection,
    platform: &str,
    previous_key_id: &str,
    sealed: &Sealed,
) -> anyhow::Result<()> {
    // Skip an app whose secret was replaced meanwhile.
    conn.execute(
        "UPDATE oauth_apps SET secret_nonce = ?2, secret_ciphertext = ?3, key_id = ?4
         WHERE platform = ?1 AND key_id = ?5",
        rusqlite::params![
            platform,
            sealed.nonce,
            sealed.ciphertext,
            sealed.key_id,
            previous_key_id
        ],
    )?;
    Ok(())
}

fn parse_url(text: Option<String>) -> Option<Url> {
    text.and_then(|t| Url::parse(&t).ok())
}

fn app_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OAuthApp> {
    let scopes: String = row.get(5)?;
    Ok(OAuthApp {
        platform: row.get(0)?,
        client_id: row.get(1)?,
        sealed: Sealed {
            nonce: row.get(2)?,
            ciphertext: row.get(3)?,
            key_id: row.get(9)?,
        },
        redirect_url: parse_url(row.get(4)?),
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        authorize_url: parse_url(row.get(6)?),
        token_url: parse_url(row.get(7)?),
        created_at: row.get(8)?,
        updated_at: row.get(10)?,
    })
}
