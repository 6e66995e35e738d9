//! Connect sessions: a short-lived invitation for an end user to connect an account for one
//! identity and integration.
//!
//! The session's URL token and the OAuth `state` are stored only as SHA-256 digests, the PKCE
//! verifier is sealed like any other secret, and a `state` is consumed by the first callback
//! that presents it, so a used or expired state can never complete a flow twice.

use super::api_keys::Environment;
use super::crypto::{self, Sealed};
use super::{Vault, now};
use anyhow::Context;
use rusqlite::OptionalExtension;
use url::Url;

/// Where a connect session stands, as `GET /v1/connect/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Waiting for the end user.
    Pending,
    /// A connection was created or updated.
    Connected,
    /// The flow failed (provider refused, token exchange failed, …).
    Failed,
    /// Not completed in time.
    Expired,
}

impl SessionStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }
}

/// One connect session.
#[derive(Debug, Clone)]
pub struct ConnectSession {
    /// Row id.
    pub id: i64,
    /// Public id for polling, e.g. `cs_3f9a…`.
    pub public_id: String,
    /// Environment the connection goes into.
    pub environment: Environment,
    /// Connector id.
    pub platform: String,
    /// Owner identity of the connection.
    pub identity: Option<String>,
    /// Identity kind.
    pub identity_type: Option<String>,
    /// The connection to update (reconnect), and once connected the connection made.
    pub connection_key: Option<String>,
    /// The base URL the connection gets with the credential the flow stores, if the app set one.
    pub base_url: Option<Url>,
    /// Stored status; see [`ConnectSession::status`].
    stored_status: String,
    /// Why the flow failed.
    pub error: Option<String>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
}

impl ConnectSession {
    /// The status at `now`: a pending session past its expiry is expired.
    pub fn status(&self, now: i64) -> SessionStatus {
        match self.stored_status.as_str() {
            "connected" => SessionStatus::Connected,
            "failed" => SessionStatus::Failed,
            _ if now >= self.expires_at => SessionStatus::Expired,
            _ => SessionStatus::Pending,
        }
    }
}

/// What a new session is for.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Environment of the caller that asked for it.
    pub environment: Environment,
    /// Connector id.
    pub platform: String,
    /// Owner identity.
    pub identity: Option<String>,
    /// Identity kind.
    pub identity_type: Option<String>,
    /// A connection to reconnect instead of creating a new one.
    pub connection_key: Option<String>,
    /// Where the connection's requests go instead of the integration's own origin.
    pub base_url: Option<Url>,
    /// Lifetime in seconds.
    pub ttl_seconds: i64,
}

/// An OAuth attempt handed back by the callback that consumed its `state`.
#[derive(Debug)]
pub struct OAuthAttempt {
    /// The session.
    pub session: ConnectSession,
    /// Digest of the browser-binding cookie set when the attempt started.
    pub browser_hash: Vec<u8>,
    /// The PKCE code verifier.
    pub verifier: String,
}

const COLUMNS: &str = "id, public_id, environment, platform, identity, identity_type, connection_key, \
     status, error, created_at, expires_at, base_url";

/// How many columns [`COLUMNS`] lists; a query selecting more reads them from this index on.
const COLUMN_COUNT: usize = 12;

/// A row as stored: the session, its environment and its base URL still text.
type RawSession = (ConnectSession, String, Option<String>);

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
            base_url: None,
        },
        row.get(2)?,
        row.get(COLUMN_COUNT - 1)?,
    ))
}

fn parse((mut session, environment, base_url): RawSession) -> anyhow::Result<ConnectSession> {
    session.environment = environment.parse()?;
    session.base_url = base_url
        .map(|url| Url::parse(&url))
        .transpose()
        .with_context(|| format!("connect session {} has an invalid base URL", session.public_id))?;
    Ok(session)
}

fn verifier_context(session_id: i64) -> String {
    format!("connect_sessions/{session_id}/verifier")
}

impl Vault {
    /// Create a session; returns it with the URL token (shown once, stored hashed).
    pub fn create_connect_session(&self, new: &NewSession) -> anyhow::Result<(ConnectSession, String)> {
        let token = format!("cst_{}", crypto::random_hex(24));
        let public_id = format!("cs_{}", crypto::random_hex(12));
        let at = now();
        let expires_at = at + new.ttl_seconds;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO connect_sessions (public_id, token_hash, environment, platform, identity,
                    identity_type, connection_key, created_at, expires_at, base_url)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                rusqlite::params![
                    public_id,
                    crypto::api_key_hash(&token),
                    new.environment.as_str(),
                    new.platform,
                    new.identity,
                    new.identity_type,
                    new.connection_key,
                    at,
                    expires_at,
                    new.base_url.as_ref().map(Url::as_str)
                ],
            )?;
            Ok(())
        })?;
        let session = self
            .connect_session_by_token(&token)?
            .ok_or_else(|| anyhow::anyhow!("the connect session just written is missing"))?;
        Ok((session, token))
    }

    /// The session whose URL token is `token`.
    pub fn connect_session_by_token(&self, token: &str) -> anyhow::Result<Option<ConnectSession>> {
        let conn = self.reader()?;
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM connect_sessions WHERE token_hash = ?1"),
                [crypto::api_key_hash(token)],
                session_from_row,
            )
            .optional()?;
        row.map(parse).transpose()
    }

    /// The session with public id `public_id` in `environment`.
    pub fn connect_session(
        &self,
        environment: Environment,
        public_id: &str,
    ) -> anyhow::Result<Option<ConnectSession>> {
        let conn = self.reader()?;
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM connect_sessions WHERE public_id = ?1 AND environment = ?2"),
                rusqlite::params![public_id, environment.as_str()],
                session_from_row,
            )
            .optional()?;
        row.map(parse).transpose()
    }

    /// Start an OAuth attempt on a pending, unexpired session: remember the `state` and the
    /// browser binding (both hashed) and the sealed PKCE `verifier`. A new attempt replaces
    /// the previous one, whose state stops working. Returns whether the session could start.
    pub fn begin_oauth(
        &self,
        session: &ConnectSession,
        state: &str,
        browser_token: &str,
        verifier: &str,
    ) -> anyhow::Result<bool> {
        let sealed = self.seal(verifier.as_bytes(), &verifier_context(session.id))?;
        self.write(|tx| {
            let updated = tx.execute(
                "UPDATE connect_sessions SET state_hash = ?2, browser_hash = ?3, verifier_nonce = ?4,
                    verifier_ciphertext = ?5, verifier_key_id = ?6
                 WHERE id = ?1 AND status = 'pending' AND expires_at > ?7",
                rusqlite::params![
                    session.id,
                    crypto::api_key_hash(state),
                    crypto::api_key_hash(browser_token),
                    sealed.nonce,
                    sealed.ciphertext,
                    sealed.key_id,
                    now()
                ],
            )?;
            Ok(updated == 1)
        })
    }

    /// Consume `state`: the first caller gets the attempt, every later caller `None`; so does a
    /// state that is unknown, or whose session is no longer pending or has expired.
    pub fn take_oauth_state(&self, state: &str) -> anyhow::Result<Option<OAuthAttempt>> {
        let state_hash = crypto::api_key_hash(state);
        let taken = self.write(|tx| {
            let row = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS}, browser_hash, verifier_nonce, verifier_ciphertext, verifier_key_id
                         FROM connect_sessions WHERE state_hash = ?1 AND status = 'pending' AND expires_at > ?2"
                    ),
                    rusqlite::params![state_hash, now()],
                    |row| {
                        Ok((
                            session_from_row(row)?,
                            row.get::<_, Vec<u8>>(COLUMN_COUNT)?,
                            Sealed {
                                nonce: row.get(COLUMN_COUNT + 1)?,
                                ciphertext: row.get(COLUMN_COUNT + 2)?,
                                key_id: row.get(COLUMN_COUNT + 3)?,
                            },
                        ))
                    },
                )
                .optional()?;
            if let Some(((session, _, _), _, _)) = &row {
                tx.execute(
                    "UPDATE connect_sessions SET state_hash = NULL, verifier_nonce = NULL,
                        verifier_ciphertext = NULL, verifier_key_id = NULL WHERE id = ?1",
                    [session.id],
                )?;
            }
            Ok(row)
        })?;
        let Some((raw, browser_hash, sealed)) = taken else {
            return Ok(None);
        };
        let session = parse(raw)?;
        let verifier = String::from_utf8(self.open_sealed(&sealed, &verifier_context(session.id))?)?;
        Ok(Some(OAuthAttempt {
            session,
            browser_hash,
            verifier,
        }))
    }

    /// Mark a session connected with the connection it produced.
    pub fn complete_connect_session(&self, session_id: i64, connection_key: &str) -> anyhow::Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE connect_sessions SET status = 'connected', connection_key = ?2, error = NULL,
                    state_hash = NULL WHERE id = ?1",
                rusqlite::params![session_id, connection_key],
            )?;
            Ok(())
        })
    }

    /// Delete sessions that expired before `cutoff` (Unix seconds); returns how many.
    pub fn prune_connect_sessions(&self, cutoff: i64) -> anyhow::Result<usize> {
        self.write(|tx| Ok(tx.execute("DELETE FROM connect_sessions WHERE expires_at < ?1", [cutoff])?))
    }

    /// Mark a session failed with a reason safe to show the end user and the app.
    pub fn fail_connect_session(&self, session_id: i64, reason: &str) -> anyhow::Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE connect_sessions SET status = 'failed', error = ?2, state_hash = NULL WHERE id = ?1",
                rusqlite::params![session_id, reason],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;
    use anyhow::Context;

    fn vault() -> anyhow::Result<(tempfile::TempDir, Vault)> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("v.db"), &KeySource::File(dir.path().join("key")))?;
        Ok((dir, vault))
    }

    fn new_session(ttl_seconds: i64) -> NewSession {
        NewSession {
            environment: Environment::Test,
            platform: "gmail".into(),
            identity: Some("alice".into()),
            identity_type: Some("user".into()),
            connection_key: None,
            base_url: None,
            ttl_seconds,
        }
    }

    #[test]
    fn a_state_completes_at_most_one_callback() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let (session, token) = vault.create_connect_session(&new_session(600))?;
        assert_eq!(session.status(now()), SessionStatus::Pending);
        assert_eq!(
            vault
                .connect_session_by_token(&token)?
                .context("by token")?
                .public_id,
            session.public_id
        );
        assert!(vault.connect_session_by_token("cst_unknown")?.is_none());

        assert!(vault.begin_oauth(&session, "state-1", "browser-1", "verifier-1")?);
        // A second attempt replaces the first: its state no longer works.
        assert!(vault.begin_oauth(&session, "state-2", "browser-2", "verifier-2")?);
        assert!(vault.take_oauth_state("state-1")?.is_none());
        let attempt = vault.take_oauth_state("state-2")?.context("first use")?;
        assert_eq!(attempt.verifier, "verifier-2");
        assert_eq!(attempt.browser_hash, crypto::api_key_hash("browser-2"));
        assert!(
            vault.take_oauth_state("state-2")?.is_none(),
            "a used state is refused"
        );

        vault.complete_connect_session(session.id, "test::gmail::alice::1")?;
        let done = vault
            .connect_session(Environment::Test, &session.public_id)?
            .context("by id")?;
        assert_eq!(done.status(now()), SessionStatus::Connected);
        assert!(
            vault
                .connect_session(Environment::Live, &session.public_id)?
                .is_none()
        );
        assert!(
            !vault.begin_oauth(&done, "state-3", "b", "v")?,
            "a finished session cannot restart"
        );
        Ok(())
    }

    #[test]
    fn expired_sessions_neither_start_nor_complete() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let (live, _) = vault.create_connect_session(&new_session(600))?;
        assert!(vault.begin_oauth(&live, "state", "browser", "verifier")?);
        // Expire it behind the vault's back.
        vault.write(|tx| Ok(tx.execute("UPDATE connect_sessions SET expires_at = 0", [])?))?;
        assert!(vault.take_oauth_state("state")?.is_none());
        let expired = vault
            .connect_session(Environment::Test, &live.public_id)?
            .context("session")?;
        assert_eq!(expired.status(now()), SessionStatus::Expired);
        assert!(!vault.begin_oauth(&expired, "again", "b", "v")?);
        vault.fail_connect_session(expired.id, "provider said no")?;
        assert_eq!(
            vault.prune_connect_sessions(-1)?,
            0,
            "nothing expired before the epoch"
        );
        let failed = vault
            .connect_session(Environment::Test, &live.public_id)?
            .context("session")?;
        assert_eq!(failed.status(now()), SessionStatus::Failed);
        assert_eq!(failed.error.as_deref(), Some("provider said no"));
        assert_eq!(vault.prune_connect_sessions(now())?, 1);
        assert!(
            vault
                .connect_session(Environment::Test, &live.public_id)?
                .is_none()
        );
        Ok(())
    }
}
