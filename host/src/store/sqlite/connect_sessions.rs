//! The `connect_sessions` table: URL tokens and OAuth states only as digests, PKCE verifiers
//! sealed.

use crate::store::TakenOAuthState;
use crate::vault::api_keys::Environment;
use crate::vault::connect_sessions::{ConnectSession, NewSession};
use crate::vault::crypto::Sealed;
use anyhow::Context;
use rusqlite::{Connection, OptionalExtension};
use url::Url;

const COLUMNS: &str = "id, public_id, environment, platform, identity, identity_type, connection_key, \
     status, error, created_at, expires_at, error_code, base_url, return_url";

/// How many columns [`COLUMNS`] lists; a query selecting more reads them from this index on.
const COLUMN_COUNT: usize = 14;

/// A row as stored: the session, its environment, base URL and return URL still text.
type RawSession = (ConnectSession, String, Option<String>, Option<String>);

pub(super) fn insert(
    conn: &Connection,
    public_id: &str,
    (token_hash, sealed_token): (&[u8], Option<&Sealed>),
    new: &NewSession,
    (created_at, expires_at): (i64, i64),
) -> anyhow::Result<()> {
    conn.execute(
        "INSERT INTO connect_sessions (public_id, token_hash, environment, platform, identity,
            identity_type, connection_key, created_at, expires_at, base_url, return_url,
            token_nonce, token_ciphertext, token_key_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        rusqlite::params![
            public_id,
            token_hash,
            new.environment.as_str(),
            new.platform,
            new.identity,
            new.identity_type,
            new.connection_key,
            created_at,
            expires_at,
            new.base_url.as_ref().map(Url::as_str),
            new.return_url.as_ref().map(Url::as_str),
            sealed_token.map(|sealed| &sealed.nonce),
            sealed_token.map(|sealed| &sealed.ciphertext),
            sealed_token.map(|sealed| &sealed.key_id)
        ],
    )?;
    Ok(())
}

/// Only sessions the gateway opened itself keep their token; an app's sessions (base or
/// return URL of its choosing) are never handed to anyone else.
pub(super) fn reusable(
    conn: &Connection,
    new: &NewSession,
    expiring_after: i64,
) -> anyhow::Result<Option<(ConnectSession, Sealed)>> {
    if new.base_url.is_some() || new.return_url.is_some() {
        return Ok(None);
    }
    let row = conn
        .query_row(
            &format!(
                "SELECT {COLUMNS}, token_nonce, token_ciphertext, token_key_id FROM connect_sessions
                 WHERE platform = ?1 AND identity IS ?2 AND environment = ?3 AND connection_key IS ?4
                   AND identity_type IS ?6 AND base_url IS NULL AND return_url IS NULL
                   AND status = 'pending' AND expires_at > ?5 AND token_ciphertext IS NOT NULL
                 ORDER BY expires_at DESC LIMIT 1"
            ),
            rusqlite::params![
                new.platform,
                new.identity,
                new.environment.as_str(),
                new.connection_key,
                expiring_after,
                new.identity_type
            ],
            |row| {
                Ok((
                    session_from_row(row)?,
                    Sealed {
                        nonce: row.get(COLUMN_COUNT)?,
                        ciphertext: row.get(COLUMN_COUNT + 1)?,
                        key_id: row.get(COLUMN_COUNT + 2)?,
                    },
                ))
            },
        )
        .optional()?;
    row.map(|(raw, token)| Ok((parse(raw)?, token))).transpose()
}

pub(super) fn by_token_hash(conn: &Connection, token_hash: &[u8]) -> anyhow::Result<Option<ConnectSession>> {
    let row = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM connect_sessions WHERE token_hash = ?1"),
            [token_hash],
            session_from_row,
        )
        .optional()?;
    row.map(parse).transpose()
}

pub(super) fn by_public_id(
    conn: &Connection,
    environment: Environment,
    public_id: &str,
) -> anyhow::Result<Option<ConnectSession>> {
    let row = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM connect_sessions WHERE public_id = ?1 AND environment = ?2"),
            rusqlite::params![public_id, environment.as_str()],
            session_from_row,
        )
        .optional()?;
    row.map(parse).transpose()
}

/// What an OAuth attempt keeps from its start to its callback.
pub(super) struct NewAttempt<'a> {
    pub state_hash: &'a [u8],
    pub browser_hash: &'a [u8],
    pub verifier: &'a Sealed,
    pub destination: &'a str,
}

pub(super) fn begin_oauth(
    conn: &Connection,
    session_id: i64,
    attempt: &NewAttempt,
    now: i64,
) -> anyhow::Result<bool> {
    let updated = conn.execute(
        "UPDATE connect_sessions SET state_hash = ?2, browser_hash = ?3, verifier_nonce = ?4,
            verifier_ciphertext = ?5, verifier_key_id = ?6, oauth_destination = ?7
         WHERE id = ?1 AND status = 'pending' AND expires_at > ?8",
        rusqlite::params![
            session_id,
            attempt.state_hash,
            attempt.browser_hash,
            attempt.verifier.nonce,
            attempt.verifier.ciphertext,
            attempt.verifier.key_id,
            attempt.destination,
            now
        ],
    )?;
    Ok(updated == 1)
}

/// Find the attempt and clear its state; the caller runs this in one write transaction, so
/// two callbacks presenting the same state cannot both find it.
pub(super) fn take_oauth_state(
    conn: &Connection,
    state_hash: &[u8],
    now: i64,
) -> anyhow::Result<Option<TakenOAuthState>> {
    let row = conn
        .query_row(
            &format!(
                "SELECT {COLUMNS}, browser_hash, verifier_nonce, verifier_ciphertext, verifier_key_id,
                    oauth_destination
                 FROM connect_sessions WHERE state_hash = ?1 AND status = 'pending' AND expires_at > ?2"
            ),
            rusqlite::params![state_hash, now],
            |row| {
                Ok((
                    session_from_row(row)?,
                    row.get::<_, Vec<u8>>(COLUMN_COUNT)?,
                    Sealed {
                        nonce: row.get(COLUMN_COUNT + 1)?,
                        ciphertext: row.get(COLUMN_COUNT + 2)?,
                        key_id: row.get(COLUMN_COUNT + 3)?,
                    },
                    row.get::<_, Option<String>>(COLUMN_COUNT + 4)?,
                ))
            },
        )
        .optional()?;
    let Some((raw, browser_hash, verifier, destination)) = row else {
        return Ok(None);
    };
    conn.execute(
        "UPDATE connect_sessions SET state_hash = NULL, verifier_nonce = NULL,
            verifier_ciphertext = NULL, verifier_key_id = NULL, oauth_destination = NULL
         WHERE id = ?1",
        [raw.0.id],
    )?;
    Ok(Some(TakenOAuthState {
        session: parse(raw)?,
        browser_hash,
        verifier,
        destination,
    }))
}

/// Only a pending session completes (one cancelled meanwhile stays cancelled). Whether it
/// completed here.
pub(super) fn complete(conn: &Connection, session_id: i64, connection_key: &str) -> anyhow::Result<bool> {
    let completed = conn.execute(
        "UPDATE connect_sessions SET status = 'connected', connection_key = ?2, error = NULL,
            error_code = NULL, state_hash = NULL WHERE id = ?1 AND status = 'pending'",
        rusqlite::params![session_id, connection_key],
    )?;
    Ok(completed > 0)
}

/// Only a pending session fails: one a concurrent flow has just connected stays connected.
/// Whether it failed here.
pub(super) fn fail(conn: &Connection, session_id: i64, code: &str, reason: &str) -> anyhow::Result<bool> {
    let failed = conn.execute(
        "UPDATE connect_sessions SET status = 'failed', error_code = ?2, error = ?3, state_hash = NULL
         WHERE id = ?1 AND status = 'pending'",
        rusqlite::params![session_id, code, reason],
    )?;
    Ok(failed > 0)
}

pub(super) fn prune(conn: &Connection, cutoff: i64) -> anyhow::Result<usize> {
    Ok(conn.execute("DELETE FROM connect_sessions WHERE expires_at < ?1", [cutoff])?)
}

fn session_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawSession> {
    Ok((
        ConnectSession {
            id: row.get(0)?,
            public_id: row.get(1)?,
            environment: Environment::Test,
            platform: row.get(3)?,
            identity: row.get(4)?,
            identity_type: row.get(5)?,
            connection_key: row.get(6)?,
            stored_status: row.get(7)?,
            error: row.get(8)?,
            created_at: row.get(9)?,
            expires_at: row.get(10)?,
            error_code: row.get(11)?,
            base_url: None,
            return_url: None,
        },
        row.get(2)?,
        row.get(COLUMN_COUNT - 2)?,
        row.get(COLUMN_COUNT - 1)?,
    ))
}

fn parse((mut session, environment, base_url, return_url): RawSession) -> anyhow::Result<ConnectSession> {
    session.environment = environment.parse()?;
    session.base_url = base_url
        .map(|url| Url::parse(&url))
        .transpose()
        .with_context(|| format!("connect session {} has an invalid base URL", session.public_id))?;
    session.return_url = return_url
        .map(|url| Url::parse(&url))
        .transpose()
        .with_context(|| format!("connect session {} has an invalid return URL", session.public_id))?;
    Ok(session)
}
