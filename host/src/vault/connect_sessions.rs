//! Connect sessions: a short-lived invitation for an end user to connect an account for one
//! identity and integration.
//!
//! The session's URL token and the OAuth `state` are stored only as SHA-256 digests, the PKCE
//! verifier is sealed like any other secret, and a `state` is consumed by the first callback
//! that presents it, so a used or expired state can never complete a flow twice.

use super::api_keys::Environment;
use super::crypto;
use super::{Vault, now};
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
    /// Every status.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Connected, Self::Failed, Self::Expired];

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

/// Why a connect session failed, as `errorCode` tells the app (`error` says it for people).
/// The codes are stable: apps branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    /// The provider refused the authorization (the user declined, or the provider failed).
    AuthorizationRefused,
    /// The provider's callback carried no authorization code.
    NoAuthorizationCode,
    /// The provider refused to exchange the code for tokens, or answered with no tokens.
    TokenExchangeFailed,
    /// The integration's sign-in is not set up on the gateway (any more).
    SignInNotSetUp,
    /// The integration is no longer loaded.
    IntegrationUnavailable,
    /// The environment holds as many connections as it may.
    ConnectionLimitReached,
    /// The connection the session reconnects was removed.
    ConnectionRemoved,
    /// The app cancelled the session (`DELETE /v1/connect/{id}`).
    Cancelled,
}

impl FailureCode {
    /// Every code.
    pub const ALL: [Self; 8] = [
        Self::AuthorizationRefused,
        Self::NoAuthorizationCode,
        Self::TokenExchangeFailed,
        Self::SignInNotSetUp,
        Self::IntegrationUnavailable,
        Self::ConnectionLimitReached,
        Self::ConnectionRemoved,
        Self::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationRefused => "authorization_refused",
            Self::NoAuthorizationCode => "no_authorization_code",
            Self::TokenExchangeFailed => "token_exchange_failed",
            Self::SignInNotSetUp => "sign_in_not_set_up",
            Self::IntegrationUnavailable => "integration_unavailable",
            Self::ConnectionLimitReached => "connection_limit_reached",
            Self::ConnectionRemoved => "connection_removed",
            Self::Cancelled => "cancelled",
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
    /// Where the user's browser goes back to once the flow has ended, if the app set it.
    pub return_url: Option<Url>,
    /// Stored status; see [`ConnectSession::status`].
    pub(crate) stored_status: String,
    /// Why the flow failed.
    pub error: Option<String>,
    /// Why the flow failed, as a [`FailureCode`]'s wire name (none for sessions that failed
    /// before codes were recorded).
    pub error_code: Option<String>,
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
    /// Where the user's browser goes back to once the flow has ended.
    pub return_url: Option<Url>,
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
    /// The origin the tokens were to be used with when the attempt started (`None`: started
    /// by a gateway that did not record it).
    pub destination: Option<String>,
}

/// (created, expires) for a session made now that lives `ttl_seconds`. Times are whole
/// seconds and a session counts as expired from its expiry second on, so the expiry rounds
/// up: rounding down would cut up to a second off the promised lifetime (all of it for a
/// one-second TTL).
fn lifetime_of_at_least(ttl_seconds: i64) -> (i64, i64) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let created_at = since_epoch.as_secs() as i64;
    let part_second = i64::from(since_epoch.subsec_nanos() > 0);
    (created_at, created_at + ttl_seconds + part_second)
}

fn verifier_context(session_id: i64) -> String {
    format!("connect_sessions/{session_id}/verifier")
}

fn token_context(public_id: &str) -> String {
    format!("connect_sessions/{public_id}/token")
}

/// What a new session keeps of its URL token.
#[derive(Debug, Clone, Copy)]
enum TokenKept {
    /// Its digest only: the token is shown once, to whoever asked for the session.
    HashOnly,
    /// Its digest, and the token sealed, to be handed out again.
    Sealed,
}

impl Vault {
    /// Create a session; returns it with the URL token (shown once, stored hashed).
    pub fn create_connect_session(&self, new: &NewSession) -> anyhow::Result<(ConnectSession, String)> {
        self.insert_connect_session(new, TokenKept::HashOnly)
    }

    /// A session for an `action_url` (a call found no usable connection): the pending one
    /// opened for the same thing by an earlier call, while it has at least half its lifetime
    /// left, or else a new one. An agent retrying a call it cannot make so gets one link to
    /// show its user, not one per retry, and the retries write nothing. To hand the link out
    /// again, such a session keeps its token sealed with the master key besides its digest.
    pub fn connect_session_for_action(&self, new: &NewSession) -> anyhow::Result<(ConnectSession, String)> {
        let expiring_after = now() + new.ttl_seconds / 2;
        if let Some((session, sealed)) = self.store.reusable_connect_session(new, expiring_after)? {
            // A token sealed with a key since rotated away is no loss: open a new session.
            if let Ok(token) = self.open_sealed(&sealed, &token_context(&session.public_id))
                && let Ok(token) = String::from_utf8(token)
            {
                return Ok((session, token));
            }
        }
        self.insert_connect_session(new, TokenKept::Sealed)
    }

    fn insert_connect_session(
        &self,
        new: &NewSession,
        kept: TokenKept,
    ) -> anyhow::Result<(ConnectSession, String)> {
        let token = crypto::random_id("cst_", 24);
        let public_id = crypto::random_id("cs_", 12);
        let sealed = match kept {
            TokenKept::HashOnly => None,
            TokenKept::Sealed => Some(self.seal(token.as_bytes(), &token_context(&public_id))?),
        };
        let lifetime = lifetime_of_at_least(new.ttl_seconds);
        let token_hash = crypto::api_key_hash(&token);
        self.write(|store| {
            store.insert_connect_session(&public_id, (&token_hash, sealed.as_ref()), new, lifetime)
        })?;
        let session = self
            .connect_session_by_token(&token)?
            .ok_or_else(|| anyhow::anyhow!("the connect session just written is missing"))?;
        Ok((session, token))
    }

    /// The session whose URL token is `token`.
    pub fn connect_session_by_token(&self, token: &str) -> anyhow::Result<Option<ConnectSession>> {
        self.store
            .connect_session_by_token_hash(&crypto::api_key_hash(token))
    }

    /// The session with public id `public_id` in `environment`.
    pub fn connect_session(
        &self,
        environment: Environment,
        public_id: &str,
    ) -> anyhow::Result<Option<ConnectSession>> {
        self.store.connect_session(environment, public_id)
    }

    /// Start an OAuth attempt on a pending, unexpired session: remember the `state` and the
    /// browser binding (both hashed), the sealed PKCE `verifier`, and the origin the tokens are
    /// to be used with (`destination`, as the connect page named it). A new attempt replaces
    /// the previous one, whose state stops working. Returns whether the session could start.
    pub fn begin_oauth(
        &self,
        session: &ConnectSession,
        state: &str,
        browser_token: &str,
        verifier: &str,
        destination: &str,
    ) -> anyhow::Result<bool> {
        let sealed = self.seal(verifier.as_bytes(), &verifier_context(session.id))?;
        self.write(|store| {
            store.begin_oauth(
                session.id,
                &crypto::api_key_hash(state),
                &crypto::api_key_hash(browser_token),
                &sealed,
                destination,
                now(),
            )
        })
    }

    /// Consume `state`: the first caller gets the attempt, every later caller `None`; so does a
    /// state that is unknown, or whose session is no longer pending or has expired.
    pub fn take_oauth_state(&self, state: &str) -> anyhow::Result<Option<OAuthAttempt>> {
        let taken = self.write(|store| store.take_oauth_state(&crypto::api_key_hash(state), now()))?;
        let Some(taken) = taken else {
            return Ok(None);
        };
        let verifier = self.open_sealed(&taken.verifier, &verifier_context(taken.session.id))?;
        Ok(Some(OAuthAttempt {
            session: taken.session,
            browser_hash: taken.browser_hash,
            verifier: String::from_utf8(verifier)?,
            destination: taken.destination,
        }))
    }

    /// Mark a pending session connected with the connection it produced. Whether it was
    /// pending.
    pub fn complete_connect_session(&self, session_id: i64, connection_key: &str) -> anyhow::Result<bool> {
        self.write(|store| store.complete_connect_session(session_id, connection_key))
    }

    /// Delete sessions that expired before `cutoff` (Unix seconds); returns how many.
    pub fn prune_connect_sessions(&self, cutoff: i64) -> anyhow::Result<usize> {
        self.write(|store| store.prune_connect_sessions(cutoff))
    }

    /// Mark a pending session failed, with a reason safe to show the end user and the app.
    /// Whether it failed here (`false`: it had ended already, connected or failed).
    pub fn fail_connect_session(
        &self,
        session_id: i64,
        code: FailureCode,
        reason: &str,
    ) -> anyhow::Result<bool> {
        self.write(|store| store.fail_connect_session(session_id, code.as_str(), reason))
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
            return_url: Some(Url::parse("https://app.example/back?tab=1").expect("url")),
            ttl_seconds,
        }
    }

    #[test]
    fn a_session_lives_at_least_its_ttl() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let (created_at, expires_at) = lifetime_of_at_least(1);
        assert!(created_at as f64 <= before + 1.0);
        assert!(
            expires_at as f64 >= before + 1.0,
            "expiry {expires_at} cuts short a 1 s session made at {before}"
        );
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

        assert!(vault.begin_oauth(
            &session,
            "state-1",
            "browser-1",
            "verifier-1",
            "https://one.example"
        )?);
        // A second attempt replaces the first: its state no longer works.
        assert!(vault.begin_oauth(
            &session,
            "state-2",
            "browser-2",
            "verifier-2",
            "https://two.example"
        )?);
        assert!(vault.take_oauth_state("state-1")?.is_none());
        let attempt = vault.take_oauth_state("state-2")?.context("first use")?;
        assert_eq!(attempt.verifier, "verifier-2");
        assert_eq!(attempt.destination.as_deref(), Some("https://two.example"));
        // The callback knows where the user goes back to.
        assert_eq!(
            attempt.session.return_url.as_ref().map(Url::as_str),
            Some("https://app.example/back?tab=1")
        );
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
            !vault.begin_oauth(&done, "state-3", "b", "v", "https://two.example")?,
            "a finished session cannot restart"
        );
        Ok(())
    }

    fn action_session(identity: &str, connection_key: Option<&str>, ttl_seconds: i64) -> NewSession {
        NewSession {
            identity: Some(identity.into()),
            identity_type: None,
            connection_key: connection_key.map(str::to_owned),
            return_url: None,
            ..new_session(ttl_seconds)
        }
    }

    #[test]
    fn a_call_is_given_the_link_an_earlier_call_opened_while_it_has_half_its_life_left() -> anyhow::Result<()>
    {
        let (_dir, vault) = vault()?;
        let (first, token) = vault.connect_session_for_action(&action_session("alice", None, 600))?;
        let (again, same_token) = vault.connect_session_for_action(&action_session("alice", None, 600))?;
        assert_eq!((&again.public_id, &same_token), (&first.public_id, &token));
        assert_eq!(
            vault
                .connect_session_by_token(&same_token)?
                .context("the link still opens its session")?
                .public_id,
            first.public_id
        );

        // Another identity, another connection to reconnect, another environment: other links.
        let (bob, _) = vault.connect_session_for_action(&action_session("bob", None, 600))?;
        let (reconnect, _) =
            vault.connect_session_for_action(&action_session("alice", Some("test::gmail::alice::1"), 600))?;
        let live = NewSession {
            environment: Environment::Live,
            ..action_session("alice", None, 600)
        };
        let (in_live, _) = vault.connect_session_for_action(&live)?;
        let as_organization = NewSession {
            identity_type: Some("organization".into()),
            ..action_session("alice", None, 600)
        };
        let (organizations, _) = vault.connect_session_for_action(&as_organization)?;
        for other in [&bob, &reconnect, &in_live, &organizations] {
            assert_ne!(other.public_id, first.public_id);
        }
        // A call naming the identity's type is given its own link again too.
        let (organizations_again, _) = vault.connect_session_for_action(&as_organization)?;
        assert_eq!(organizations_again.public_id, organizations.public_id);

        // A session with less than half a (longer) lifetime left is not handed out again.
        let (longer, _) = vault.connect_session_for_action(&action_session("alice", None, 2000))?;
        assert_ne!(longer.public_id, first.public_id);

        // Nor is one that has ended.
        vault.complete_connect_session(longer.id, "test::gmail::alice::1")?;
        vault.complete_connect_session(first.id, "test::gmail::alice::1")?;
        let (after, _) = vault.connect_session_for_action(&action_session("alice", None, 600))?;
        assert!(after.public_id != first.public_id && after.public_id != longer.public_id);
        Ok(())
    }

    #[test]
    fn an_apps_session_is_never_handed_to_a_call() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        // Opened by an app for the same identity and integration, with nothing of its own set.
        let (apps, _) = vault.create_connect_session(&action_session("alice", None, 600))?;
        let (calls, _) = vault.connect_session_for_action(&action_session("alice", None, 600))?;
        assert_ne!(calls.public_id, apps.public_id);
        // A session with a return URL is the app's too, even when a call asks for the same one.
        let with_return = new_session(600);
        let (first, _) = vault.connect_session_for_action(&with_return)?;
        let (second, _) = vault.connect_session_for_action(&with_return)?;
        assert_ne!(first.public_id, second.public_id);
        Ok(())
    }

    #[test]
    fn expired_sessions_neither_start_nor_complete() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let (live, _) = vault.create_connect_session(&new_session(600))?;
        assert!(vault.begin_oauth(&live, "state", "browser", "verifier", "https://api.example")?);
        // The store takes the time from its caller: ask it as of the session's expiry.
        let expiry = live.expires_at;
        let store = vault.store();
        assert!(
            store
                .take_oauth_state(&crypto::api_key_hash("state"), expiry)?
                .is_none()
        );
        assert_eq!(live.status(expiry), SessionStatus::Expired);
        let verifier = vault.seal(b"v", &verifier_context(live.id))?;
        let (again, browser) = (crypto::api_key_hash("again"), crypto::api_key_hash("b"));
        assert!(!store.begin_oauth(
            live.id,
            &again,
            &browser,
            &verifier,
            "https://api.example",
            expiry
        )?);
        assert!(vault.fail_connect_session(
            live.id,
            FailureCode::AuthorizationRefused,
            "provider said no"
        )?);
        assert!(
            !vault.fail_connect_session(live.id, FailureCode::Cancelled, "again")?,
            "a session that ended stays as it ended"
        );
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
        assert_eq!(vault.prune_connect_sessions(expiry + 1)?, 1);
        assert!(
            vault
                .connect_session(Environment::Test, &live.public_id)?
                .is_none()
        );
        Ok(())
    }
}
