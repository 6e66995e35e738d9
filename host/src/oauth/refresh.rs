//! Token refresh: proactive (the access token expires within a margin) and reactive (the
//! upstream answered 401), single-flight per connection.
//!
//! Concurrent requests on one connection queue on that connection's lock; the first one
//! calls the token endpoint and stores the new tokens, and each later one re-reads the vault
//! and finds them already fresh — so a burst of requests on an expired token makes exactly
//! one token request. New tokens (a rotated refresh token included) are committed to SQLite
//! before anyone uses them.
//!
//! Once a caller holds the lock, its refresh runs in a task of its own: a provider that
//! accepted the refresh token may have rotated it, and the new one must be stored even if
//! every caller waiting for it went away meanwhile — else the connection is broken for good.
//!
//! Gateways sharing one database do the same between them with a lease in the database: the
//! gateway holding a connection's lease refreshes it, the others wait for its tokens (or for
//! the lease to run out, should that gateway have stopped).

use super::client::{TokenEndpoint, TokenError};
use super::{ClientError, OAuthClient};
use crate::metrics::{Metrics, RefreshLabels};
use crate::runtime::manifest::OAuth2Config;
use crate::runtime::{Credential, CredentialRenewal, RenewalFailure};
use crate::vault::Vault;
use crate::vault::connections::{ConnectionRecord, TokenSet};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What asks for a refresh.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// The access token expires within the margin.
    Expiring,
    /// The upstream rejected this access token.
    Rejected(String),
}

/// Why no fresh token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The grant is gone (revoked, expired, no refresh token): the user must reconnect. The
    /// connection is marked `failed`.
    #[error("{0}")]
    Revoked(String),
    /// The provider or the configuration failed; the connection may work again later.
    #[error("{0}")]
    Unavailable(String),
}

impl From<RefreshError> for RenewalFailure {
    fn from(error: RefreshError) -> Self {
        match error {
            RefreshError::Revoked(message) => Self {
                revoked: true,
                message,
            },
            RefreshError::Unavailable(message) => Self {
                revoked: false,
                message,
            },
        }
    }
}

/// A failure of the gateway's own storage during a refresh: the details go to the log, the
/// caller gets a fixed text (a 5xx reply never carries internals).
/// Whether a token stored at `stored_at` and expiring at `expires_at` should be refreshed at
/// `now`: within `margin` of its expiry, or — for a token that lives less than twice the margin
/// (some providers issue one-minute tokens) — in the second half of its life, so that it is not
/// refreshed before every call.
fn refresh_due(expires_at: i64, stored_at: i64, now: i64, margin: i64) -> bool {
    let lifetime = expires_at - stored_at;
    let margin = if lifetime > 0 {
        margin.min(lifetime / 2)
    } else {
        margin
    };
    expires_at - now <= margin
}

/// Whether tokens this gateway could not store answer what `trigger` asked for at `now`: not
/// the token the upstream refused, and one that has not expired. (Not refreshed before their
/// expiry: they are refreshed from only once they must be, and stored first if they can be.)
fn unsaved_tokens_serve(tokens: &TokenSet, trigger: &Trigger, now: i64) -> bool {
    let unexpired = tokens.expires_at.is_none_or(|at| at > now);
    match trigger {
        Trigger::Rejected(stale) => tokens.access_token != *stale && unexpired,
        Trigger::Expiring => unexpired,
    }
}

/// How much longer than one token request a refresh lease lasts: storing the answer may wait
/// for the database's busy timeout (5 s), and times are whole seconds.
const LEASE_SPARE_SECONDS: i64 = 15;

/// How long a proactive refresh that failed for want of the provider (down, refusing the app,
/// answering nonsense) is not tried again for the same tokens: their access token still works,
/// so calls go on with it instead of sending one token request each. (Calls that queued behind
/// a failing refresh share its failure, whatever asked for it.)
const FAILED_REFRESH_HELD_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a gateway waiting for another's refresh looks for its tokens.
const LEASE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

fn internal(step: &str, error: &anyhow::Error) -> RefreshError {
    tracing::error!(error = %format!("{error:#}"), "{step} failed during an OAuth refresh");
    RefreshError::Unavailable(format!("{step} failed inside the gateway; see its log"))
}

/// Refreshes OAuth tokens for the whole gateway.
pub struct TokenRefresher {
    vault: Vault,
    endpoint: TokenEndpoint,
    margin_seconds: i64,
    metrics: Arc<Metrics>,
    /// One lock per connection being refreshed.
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// The last refresh of a connection that failed for want of the provider: when, for which
    /// access token, and why (see [`FAILED_REFRESH_HELD_FOR`]).
    recent_failures: Mutex<HashMap<i64, RecentFailure>>,
    /// Tokens a provider issued that the database refused to store (see [`UnsavedTokens`]).
    unsaved: Mutex<HashMap<i64, UnsavedTokens>>,
    /// Where refreshes run; shutdown waits for them.
    tasks: TaskTracker,
}

impl std::fmt::Debug for TokenRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRefresher")
            .field("margin_seconds", &self.margin_seconds)
            .finish_non_exhaustive()
    }
}

impl TokenRefresher {
    /// A refresher that renews tokens expiring within `margin_seconds`, running each refresh
    /// as a task tracked by `tasks`.
    pub fn new(
        vault: Vault,
        endpoint: TokenEndpoint,
        margin_seconds: i64,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            vault,
            endpoint,
            margin_seconds,
            metrics,
            locks: Mutex::new(HashMap::new()),
            recent_failures: Mutex::new(HashMap::new()),
            unsaved: Mutex::new(HashMap::new()),
            tasks,
        }
    }

    /// Why the last refresh of connection `id` failed, if it did for these very tokens (a
    /// reconnect or another gateway's refresh since makes it moot) and its answer holds for a
    /// caller that asked at `asked_at` with `trigger`: one that was waiting while it ran, or a
    /// proactive one not long after, while `current`'s access token still works.
    fn recent_failure(
        &self,
        current: &ConnectionRecord,
        access_token: &str,
        asked_at: std::time::Instant,
        trigger: &Trigger,
    ) -> Option<String> {
        let failures = self.recent_failures.lock().unwrap_or_else(|p| p.into_inner());
        let failure = failures
            .get(&current.id)
            .filter(|f| f.access_token == access_token)?;
        let waited_for_it = failure.at >= asked_at;
        let still_works = current
            .token_expires_at
            .is_some_and(|at| at > crate::vault::now());
        let held = matches!(trigger, Trigger::Expiring)
            && still_works
            && failure.at.elapsed() <= FAILED_REFRESH_HELD_FOR;
        (waited_for_it || held).then(|| failure.reason.clone())
    }

    /// Note how the refresh of connection `id`, holding `access_token`, ended.
    fn note_outcome(&self, id: i64, access_token: &str, outcome: &Result<TokenSet, RefreshError>) {
        let mut failures = self.recent_failures.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Err(RefreshError::Unavailable(reason)) => {
                failures.insert(
                    id,
                    RecentFailure {
                        at: std::time::Instant::now(),
                        access_token: access_token.to_owned(),
                        reason: reason.clone(),
                    },
                );
            }
            _ => {
                failures.remove(&id);
            }
        }
    }

    /// A refresher whose token requests use `runtime`'s transport, address policy and
    /// upstream timeout.
    pub fn for_runtime(
        vault: Vault,
        runtime: &crate::runtime::Runtime,
        margin_seconds: i64,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
    ) -> Self {
        let limits = runtime.limits();
        let endpoint = TokenEndpoint::new(runtime.upstream(), limits.address_policy, limits.upstream_timeout);
        Self::new(vault, endpoint, margin_seconds, metrics, tasks)
    }

    /// The token endpoint (also used for code exchange by the connect flow).
    pub fn endpoint(&self) -> &TokenEndpoint {
        &self.endpoint
    }

    /// Whether `record`'s access token expires within the margin at `now`.
    pub fn is_expiring(&self, record: &ConnectionRecord, now: i64) -> bool {
        record
            .token_expires_at
            .is_some_and(|at| refresh_due(at, record.secret_stored_at, now, self.margin_seconds))
    }

    /// Fresh tokens for `record`, refreshing at most once however many callers ask at once.
    ///
    /// A caller that goes away while it waits for the connection's lock gives up its turn;
    /// once it has the lock, the refresh runs to its end whether or not the caller waits.
    pub async fn refresh(
        self: &Arc<Self>,
        integration: &str,
        declared: &OAuth2Config,
        record: &ConnectionRecord,
        trigger: Trigger,
    ) -> Result<TokenSet, RefreshError> {
        let asked_at = std::time::Instant::now();
        let turn = self.turn(record.id).await;
        let this = self.clone();
        let (integration, declared, record) = (integration.to_owned(), declared.clone(), record.clone());
        let refresh = async move {
            let result = this
                .refresh_locked(&integration, &declared, &record, trigger, asked_at)
                .await;
            drop(turn);
            this.store_kept_tokens_in_background(record.id);
            result
        };
        self.tasks
            .spawn(refresh.in_current_span())
            .await
            .map_err(|error| internal("the refresh task", &error.into()))?
    }

    async fn refresh_locked(
        &self,
        integration: &str,
        declared: &OAuth2Config,
        record: &ConnectionRecord,
        trigger: Trigger,
        asked_at: std::time::Instant,
    ) -> Result<TokenSet, RefreshError> {
        // The lease outlives the token request and the write of its answer (which may wait for
        // the database), so that it never ends while this gateway is still at work; it names
        // this attempt, so that giving it up never gives up another gateway's.
        let lease_seconds = self.endpoint.timeout().as_secs() as i64 + LEASE_SPARE_SECONDS;
        let holder = super::pkce::random_token(16);
        let waiting_since = std::time::Instant::now();
        loop {
            // Someone else may have refreshed while this caller waited for the lock or lease.
            let (current, tokens) = self.read_tokens(record.id).await?;
            // Tokens kept in memory are newer than the stored ones, which then answer nothing.
            let kept = self.unsaved_tokens_of(&current, &tokens);
            let now = crate::vault::now();
            let kept_serve = kept
                .as_ref()
                .filter(|kept| unsaved_tokens_serve(&kept.tokens, &trigger, now));
            if kept.is_none() && self.is_fresh(&trigger, &current, &tokens) {
                return Ok(tokens);
            }
            // The database refused them a moment ago: not asked again by every call.
            if let Some(kept) = kept_serve.filter(|kept| kept.store_failed_at.elapsed() < UNSAVED_STORE_RETRY)
            {
                return Ok(kept.tokens.clone());
            }
            if let Some(reason) = self.recent_failure(&current, &tokens.access_token, asked_at, &trigger) {
                return Err(RefreshError::Unavailable(reason));
            }
            let leased = current.clone();
            let lease_holder = holder.clone();
            let taken = match self
                .vault
                .run(move |vault| vault.take_refresh_lease(&leased, &lease_holder, lease_seconds))
                .await
            {
                Ok(taken) => taken,
                Err(error) => match kept_serve {
                    // A database that refuses writes refuses the lease too: kept tokens serve,
                    // and the next calls do not wait on it again at once.
                    Some(kept) => {
                        self.note_store_refused(current.id);
                        return Ok(kept.tokens.clone());
                    }
                    None => return Err(internal("taking the refresh lease", &error)),
                },
            };
            if taken {
                let outcome = self
                    .refresh_leased(integration, declared, record.id, &trigger)
                    .await;
                self.note_outcome(current.id, &tokens.access_token, &outcome);
                let (leased, lease_holder) = (current.clone(), holder.clone());
                if let Err(error) = self
                    .vault
                    .run(move |vault| vault.release_refresh_lease(&leased, &lease_holder))
                    .await
                {
                    // It runs out by itself.
                    tracing::warn!(connection = %current.key, error = %format!("{error:#}"), "could not release the refresh lease");
                }
                return outcome;
            }
            // Another gateway on this database is refreshing the connection. Its lease began
            // before this wait did, so it has ended by now unless a third gateway took it.
            if waiting_since.elapsed().as_secs() as i64 > lease_seconds {
                return Err(RefreshError::Unavailable(
                    "another gateway has been refreshing this connection's tokens for too long".into(),
                ));
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// The connection with row id `id` and its tokens, as stored now.
    async fn read_tokens(&self, id: i64) -> Result<(ConnectionRecord, TokenSet), RefreshError> {
        let found = self
            .vault
            .run(move |vault| {
                let Some(current) = vault.connection_by_id(id)? else {
                    return Ok(None);
                };
                let tokens = vault.tokens(&current)?;
                Ok(Some((current, tokens)))
            })
            .await
            .map_err(|e| internal("reading the connection's tokens", &e))?;
        found.ok_or_else(|| {
            // Nothing is kept for it any more.
            self.forget_unsaved(id);
            internal(
                "reading the connection's tokens",
                &anyhow::anyhow!("the connection was deleted"),
            )
        })
    }

    /// Whether `tokens`, `current`'s as stored, already answer what `trigger` asked for.
    fn is_fresh(&self, trigger: &Trigger, current: &ConnectionRecord, tokens: &TokenSet) -> bool {
        match trigger {
            Trigger::Rejected(stale) => tokens.access_token != *stale,
            Trigger::Expiring => !self.is_expiring(current, crate::vault::now()),
        }
    }

    /// Holding the lease on connection `id`: read its tokens again (a gateway whose lease ended
    /// just before may have stored new ones), and refresh them unless they are fresh now.
    async fn refresh_leased(
        &self,
        integration: &str,
        declared: &OAuth2Config,
        id: i64,
        trigger: &Trigger,
    ) -> Result<TokenSet, RefreshError> {
        let (mut current, mut tokens) = self.read_tokens(id).await?;
        let mut refresh_kept = false;
        let mut stored = tokens.clone();
        if let Some(unsaved) = self.unsaved_tokens_of(&current, &tokens) {
            if self.store_unsaved(&current, &unsaved).await {
                (current, tokens) = self.read_tokens(id).await?;
                stored = tokens.clone();
            } else if unsaved_tokens_serve(&unsaved.tokens, trigger, crate::vault::now()) {
                return Ok(unsaved.tokens);
            } else {
                // Refreshed from what is kept; stored, if it can be, over what is stored.
                tokens = unsaved.tokens;
                refresh_kept = true;
            }
        }
        if !refresh_kept && self.is_fresh(trigger, &current, &tokens) {
            return Ok(tokens);
        }
        // (A refresh another gateway saw refused dropped the refresh token.)
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            self.mark_failed(current).await;
            return Err(RefreshError::Revoked(
                "the access token is no longer valid and there is no refresh token".into(),
            ));
        };
        self.refresh_with_lease(integration, declared, (&current, &stored), tokens, &refresh_token)
            .await
    }

    /// Refresh `tokens` with `refresh_token`, holding the connection's lease; `current` and
    /// `as_stored` are the connection and its tokens as stored (`tokens` may be newer ones kept in
    /// memory).
    async fn refresh_with_lease(
        &self,
        integration: &str,
        declared: &OAuth2Config,
        (current, as_stored): (&ConnectionRecord, &TokenSet),
        tokens: TokenSet,
        refresh_token: &str,
    ) -> Result<TokenSet, RefreshError> {
        let vault = self.vault.clone();
        let (name, config) = (integration.to_owned(), declared.clone());
        let client = self
            .vault
            .run(move |_| Ok(OAuthClient::resolve_declared(&vault, &name, &config)))
            .await
            .map_err(|e| internal("reading the OAuth app", &e))?
            .map_err(|e| match e {
                ClientError::Vault(e) => internal("reading the OAuth app", &e),
                // The operator's configuration: worth saying what is missing.
                other => RefreshError::Unavailable(other.to_string()),
            })?;

        let outcome = self.endpoint.refresh(&client, refresh_token).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(TokenError::Rejected(_)) => "rejected",
            Err(_) => "unavailable",
        };
        self.metrics
            .token_refreshes
            .get_or_create(&RefreshLabels {
                integration: integration.to_owned(),
                outcome: label.to_owned(),
            })
            .inc();
        match outcome {
            Ok(fresh) => {
                let stored = fresh.clone();
                let record = current.clone();
                let written = match self
                    .vault
                    .run(move |vault| vault.store_tokens(&record, &stored))
                    .await
                {
                    Ok(written) => written,
                    Err(error) => {
                        // The provider may have retired the stored refresh token: keep these
                        // and go on with them rather than lose the connection.
                        tracing::error!(integration, connection = %current.key, error = %format!("{error:#}"),
                            "could not store refreshed OAuth tokens; this gateway keeps them in memory and stores them before the connection's next refresh");
                        self.keep_unsaved(current.id, as_stored, &fresh);
                        return Ok(fresh);
                    }
                };
                self.forget_unsaved(current.id);
                if !written {
                    // Reconnected meanwhile (or refreshed by a gateway whose lease ran out): the
                    // tokens stored now are the newer grant's.
                    tracing::info!(integration, connection = %current.key, "OAuth tokens changed during the refresh; using the stored ones");
                    return Ok(self.read_tokens(current.id).await?.1);
                }
                tracing::info!(integration, connection = %current.key, "OAuth access token refreshed");
                Ok(fresh)
            }
            Err(TokenError::Rejected(reason)) => {
                tracing::warn!(integration, connection = %current.key, %reason, "OAuth refresh refused; the connection needs reconnecting");
                // The refused refresh token is never sent again: calls are told to reconnect.
                let (record, refused) = (current.clone(), reason.clone());
                let newly_failed = self
                    .vault
                    .run(move |vault| vault.refresh_refused(&record, &tokens, &refused))
                    .await
                    .map_err(|e| internal("recording the refused refresh", &e))?;
                if newly_failed {
                    self.metrics.count_connection_failed(integration);
                }
                Err(RefreshError::Revoked(format!(
                    "the provider refused the refresh: {reason}"
                )))
            }
            Err(error) => {
                tracing::warn!(integration, connection = %current.key, %error, "OAuth refresh failed");
                Err(RefreshError::Unavailable(error.to_string()))
            }
        }
    }

    /// Tokens of `current` that this gateway refreshed but could not store, if they were
    /// refreshed from `stored`, its tokens as stored now (otherwise they are moot, and
    /// forgotten). Compared as tokens, not as sealed bytes: a master-key rotation re-seals the
    /// stored ones.
    fn unsaved_tokens_of(&self, current: &ConnectionRecord, stored: &TokenSet) -> Option<UnsavedTokens> {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        match unsaved.get(&current.id) {
            Some(kept) if kept.refreshed_from == *stored => Some(kept.clone()),
            Some(_) => {
                unsaved.remove(&current.id);
                None
            }
            None => None,
        }
    }

    fn keep_unsaved(&self, id: i64, refreshed_from: &TokenSet, tokens: &TokenSet) {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        // A task storing the ones these replace goes on with these.
        let retrying = unsaved.get(&id).is_some_and(|kept| kept.retrying);
        unsaved.insert(
            id,
            UnsavedTokens {
                refreshed_from: refreshed_from.clone(),
                tokens: tokens.clone(),
                store_failed_at: std::time::Instant::now(),
                retrying,
            },
        );
    }

    fn forget_unsaved(&self, id: i64) {
        self.unsaved.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Forget what this gateway holds for connection `id`, deleted: tokens it kept unsaved and
    /// the last refresh failure.
    pub fn forget_connection(&self, id: i64) {
        self.forget_unsaved(id);
        self.recent_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Note that the database refused a write for connection `id` just now, so that calls are
    /// served its kept tokens for a while without asking it again.
    fn note_store_refused(&self, id: i64) {
        let mut kept = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = kept.get_mut(&id) {
            kept.store_failed_at = std::time::Instant::now();
        }
    }

    /// Try again to store `unsaved` over `current`; returns whether that is settled (stored,
    /// or moot as the stored secret changed), which forgets them.
    async fn store_unsaved(&self, current: &ConnectionRecord, unsaved: &UnsavedTokens) -> bool {
        let (record, tokens) = (current.clone(), unsaved.tokens.clone());
        match self
            .vault
            .run(move |vault| vault.store_tokens(&record, &tokens))
            .await
        {
            Ok(_) => {
                tracing::info!(connection = %current.key, "stored the refreshed OAuth tokens kept in memory");
                self.forget_unsaved(current.id);
                true
            }
            Err(error) => {
                tracing::error!(connection = %current.key, error = %format!("{error:#}"), "still cannot store refreshed OAuth tokens; using them from memory");
                self.note_store_refused(current.id);
                false
            }
        }
    }

    /// Mark the connection failed; returns whether it was not failed before.
    async fn mark_failed(&self, record: ConnectionRecord) -> bool {
        let key = record.key.clone();
        match self
            .vault
            .run(move |vault| vault.mark_connection_failed(&record))
            .await
        {
            Ok(turned) => turned,
            Err(error) => {
                tracing::error!(connection = %key, error = %format!("{error:#}"), "could not mark the connection failed");
                false
            }
        }
    }

    /// If this gateway keeps unsaved tokens for connection `id`, try to store them every
    /// [`UNSAVED_STORE_RETRY`] until they are stored or moot, whether or not calls come: the
    /// sooner they are stored, the shorter the time another gateway on this database could
    /// refresh with the refresh token they replaced, or a restart could lose them. One such
    /// task per connection; it is not waited for at shutdown.
    fn store_kept_tokens_in_background(self: &Arc<Self>, id: i64) {
        {
            let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            match unsaved.get_mut(&id) {
                Some(kept) if !kept.retrying => kept.retrying = true,
                _ => return,
            }
        }
        let this = self.clone();
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(UNSAVED_STORE_RETRY).await;
                    let turn = this.turn(id).await;
                    // A connection that cannot be read now is tried again; a deleted one, or
                    // tokens moot, are forgotten by these calls.
                    if let Ok((current, stored)) = this.read_tokens(id).await
                        && let Some(kept) = this.unsaved_tokens_of(&current, &stored)
                    {
                        this.store_unsaved(&current, &kept).await;
                    }
                    drop(turn);
                    // Done once nothing is kept; tokens kept anew meanwhile are tried next.
                    if !this
                        .unsaved
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains_key(&id)
                    {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
    }

    /// Wait for connection `id`'s turn to refresh.
    async fn turn(self: &Arc<Self>, id: i64) -> Turn {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(id).or_default().clone()
        };
        Turn {
            guard: Some(lock.lock_owned().await),
            refresher: self.clone(),
            id,
        }
    }
}

/// Tokens a refresh got that could not be stored (the database refused the write: full disk,
/// locked past its busy timeout). A provider that rotates refresh tokens has retired the one
/// stored, so they are kept, and stored before anything else is done for the connection.
#[derive(Clone)]
struct UnsavedTokens {
    /// The stored tokens they were refreshed from: they are moot once those change (a
    /// reconnect, another gateway's refresh).
    refreshed_from: TokenSet,
    tokens: TokenSet,
    /// When the database last refused them.
    store_failed_at: std::time::Instant,
    /// Whether a background task tries to store them.
    retrying: bool,
}

/// How long after the database refused kept tokens calls are served them without asking it
/// again (each try may wait for its busy timeout).
const UNSAVED_STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// A refresh that failed for want of the provider.
struct RecentFailure {
    at: std::time::Instant,
    /// The access token it was to replace.
    access_token: String,
    reason: String,
}

/// A connection's turn to refresh: its lock, held until dropped, when the lock is forgotten if
/// nobody else waits for it.
struct Turn {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    refresher: Arc<TokenRefresher>,
    id: i64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let mut locks = self
            .refresher
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The guard's and the map's: nobody is waiting (a waiter would hold a third, taken
        // under the map's lock, which this holds).
        if Arc::strong_count(tokio::sync::OwnedMutexGuard::mutex(&guard)) == 2 {
            locks.remove(&self.id);
        }
        drop(locks);
        drop(guard);
    }
}

/// Reactive refresh for one call: renews the connection's token after an upstream 401.
pub struct ConnectionRenewal {
    refresher: Arc<TokenRefresher>,
    integration: String,
    declared: OAuth2Config,
    record: ConnectionRecord,
}

impl ConnectionRenewal {
    /// Renewal of `record`'s tokens for `integration`.
    pub fn new(
        refresher: Arc<TokenRefresher>,
        integration: &str,
        declared: OAuth2Config,
        record: ConnectionRecord,
    ) -> Self {
        Self {
            refresher,
            integration: integration.to_owned(),
            declared,
            record,
        }
    }
}

impl CredentialRenewal for ConnectionRenewal {
    fn renew(&self, rejected: Credential) -> BoxFuture<'static, Result<Credential, RenewalFailure>> {
        let refresher = self.refresher.clone();
        let (integration, declared, record) = (
            self.integration.clone(),
            self.declared.clone(),
            self.record.clone(),
        );
        Box::pin(async move {
            let stale = rejected.secret().to_owned();
            let tokens = refresher
                .refresh(&integration, &declared, &record, Trigger::Rejected(stale.clone()))
                .await?;
            if tokens.access_token == stale {
                return Err(RenewalFailure {
                    revoked: false,
                    message: "the refreshed access token is the one the upstream rejected".into(),
                });
            }
            Ok(Credential::new(tokens.access_token))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
    use crate::vault::KeySource;
    use crate::vault::api_keys::Environment;
    use crate::vault::connections::{ConnectionPatch, NewConnection};
    use crate::vault::oauth_apps::NewOAuthApp;
    use anyhow::Context;
    use std::time::Duration;
    use tokio::sync::Notify;

    /// A token endpoint that rotates the refresh token, answering only once the test lets it.
    #[derive(Default)]
    struct HeldProvider {
        /// Token requests received.
        requests: std::sync::atomic::AtomicUsize,
        /// Notified when a token request arrives.
        arrived: Notify,
        /// Lets the answer go.
        release: Notify,
    }

    impl Upstream for HeldProvider {
        fn send(
            &self,
            _request: UpstreamRequest,
        ) -> futures::future::BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
            Box::pin(async move {
                self.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.arrived.notify_one();
                self.release.notified().await;
                let mut headers = http::HeaderMap::new();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok(UpstreamResponse {
                    status: 200,
                    headers,
                    body: r#"{"access_token":"at-2","refresh_token":"rt-2","expires_in":3600}"#.into(),
                })
            })
        }
    }

    /// A token endpoint that is down: 503 to every request, which it counts.
    #[derive(Default)]
    struct DownProvider {
        requests: std::sync::atomic::AtomicUsize,
    }

    impl Upstream for DownProvider {
        fn send(
            &self,
            _request: UpstreamRequest,
        ) -> futures::future::BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
            self.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async {
                Ok(UpstreamResponse {
                    status: 503,
                    headers: http::HeaderMap::new(),
                    body: "down".into(),
                })
            })
        }
    }

    /// After a proactive refresh failed for want of the provider, proactive ones for the same
    /// tokens are told so for a while without a token request each (their token still works);
    /// a call the upstream refused tries again, and a reconnect's tokens are tried at once.
    #[tokio::test]
    async fn a_failed_refresh_is_not_tried_again_at_once_for_the_same_tokens() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = vault_in(&dir)?;
        let record = gmail_connection(&vault)?;
        let provider = Arc::new(DownProvider::default());
        let endpoint = TokenEndpoint::new(
            provider.clone(),
            crate::egress::AddressPolicy::PublicOnly,
            Duration::from_secs(5),
        );
        let tasks = TaskTracker::new();
        let refresher = Arc::new(TokenRefresher::new(
            vault.clone(),
            endpoint,
            300,
            Arc::default(),
            tasks,
        ));
        let requests = || provider.requests.load(std::sync::atomic::Ordering::SeqCst);
        // Due for a proactive refresh (inside the margin), and still working.
        store_tokens_issued_an_hour_ago(&dir, &vault, &record)?;
        for _ in 0..3 {
            let outcome = refresher
                .refresh("gmail", &declared(), &record, Trigger::Expiring)
                .await;
            assert!(
                matches!(outcome, Err(RefreshError::Unavailable(ref why)) if why.contains("503")),
                "{outcome:?}"
            );
        }
        assert_eq!(requests(), 1);
        let rejected = refresher
            .refresh("gmail", &declared(), &record, Trigger::Rejected("at-1".into()))
            .await;
        assert!(rejected.is_err());
        assert_eq!(requests(), 2, "a refused token is worth another try");
        // Reconnected: other tokens, tried at once.
        vault.store_secret(
            &record,
            &TokenSet {
                access_token: "at-9".into(),
                refresh_token: Some("rt-9".into()),
                expires_at: None,
                scope: None,
                refresh_refused: None,
            }
            .to_secret(),
            None,
            None,
        )?;
        let outcome = refresher
            .refresh("gmail", &declared(), &record, Trigger::Rejected("at-9".into()))
            .await;
        assert!(outcome.is_err());
        assert_eq!(requests(), 3);
        Ok(())
    }

    /// Give `record` tokens `at-1` / `rt-1` that expire in 100 s and were stored an hour ago:
    /// their last 100 s are within the 300 s margin (not half of a short life), so they are
    /// due for a proactive refresh, and still work.
    fn store_tokens_issued_an_hour_ago(
        dir: &tempfile::TempDir,
        vault: &Vault,
        record: &ConnectionRecord,
    ) -> anyhow::Result<()> {
        let tokens = TokenSet {
            access_token: "at-1".into(),
            refresh_token: Some("rt-1".into()),
            expires_at: Some(crate::vault::now() + 100),
            scope: None,
            refresh_refused: None,
        };
        vault.store_secret(record, &tokens.to_secret(), tokens.expires_at, None)?;
        rusqlite::Connection::open(dir.path().join("db"))?.execute(
            "UPDATE connections SET secret_stored_at = secret_stored_at - 3600",
            [],
        )?;
        Ok(())
    }

    /// A vault on `dir`'s database, as one gateway opens it.
    fn vault_in(dir: &tempfile::TempDir) -> anyhow::Result<Vault> {
        Vault::open(&dir.path().join("db"), &KeySource::Explicit("ab".repeat(32)))
    }

    /// A refresher on `vault` whose token requests go to `provider`.
    fn refresher(vault: &Vault, provider: &Arc<HeldProvider>, tasks: &TaskTracker) -> Arc<TokenRefresher> {
        let endpoint = TokenEndpoint::new(
            provider.clone(),
            crate::egress::AddressPolicy::PublicOnly,
            Duration::from_secs(5),
        );
        Arc::new(TokenRefresher::new(
            vault.clone(),
            endpoint,
            300,
            Arc::default(),
            tasks.clone(),
        ))
    }

    /// `refresher` asked, in a task of its own, for fresh tokens of `record` after the
    /// upstream refused `at-1`.
    fn refresh_in_task(
        refresher: &Arc<TokenRefresher>,
        record: &ConnectionRecord,
    ) -> tokio::task::JoinHandle<Result<TokenSet, RefreshError>> {
        let (refresher, record) = (refresher.clone(), record.clone());
        tokio::spawn(async move {
            refresher
                .refresh("gmail", &declared(), &record, Trigger::Rejected("at-1".into()))
                .await
        })
    }

    fn declared() -> OAuth2Config {
        OAuth2Config {
            authorize_url: "https://accounts.example.com/auth".into(),
            token_url: "https://oauth.example.com/token".into(),
            scopes: Vec::new(),
            authorize_params: Vec::new(),
        }
    }

    /// An OAuth app for Gmail and a connection holding `at-1` / `rt-1`.
    fn gmail_connection(vault: &Vault) -> anyhow::Result<ConnectionRecord> {
        vault.put_oauth_app(&NewOAuthApp {
            platform: "gmail".into(),
            client_id: "id".into(),
            client_secret: "secret".into(),
            ..NewOAuthApp::default()
        })?;
        let tokens = TokenSet {
            access_token: "at-1".into(),
            refresh_token: Some("rt-1".into()),
            expires_at: None,
            scope: None,
            refresh_refused: None,
        };
        Ok(vault.add_connection(
            &NewConnection {
                platform: "gmail".into(),
                secret: tokens.to_secret(),
                ..NewConnection::default()
            },
            None,
        )??)
    }

    #[tokio::test]
    async fn a_refresh_whose_caller_went_away_still_stores_the_rotated_tokens() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = vault_in(&dir)?;
        let record = gmail_connection(&vault)?;
        let provider = Arc::new(HeldProvider::default());
        let tasks = TaskTracker::new();
        let refresher = refresher(&vault, &provider, &tasks);
        let declared = declared();

        // The caller goes away once the provider holds the refresh token.
        let caller = refresher.refresh("gmail", &declared, &record, Trigger::Rejected("at-1".into()));
        tokio::select! {
            answer = caller => panic!("answered before the provider did: {answer:?}"),
            () = provider.arrived.notified() => {}
        }
        provider.release.notify_one();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await?;

        let current = vault.connection_by_id(record.id)?.context("the connection")?;
        let stored = vault.tokens(&current)?;
        assert_eq!(
            (stored.access_token.as_str(), stored.refresh_token.as_deref()),
            ("at-2", Some("rt-2"))
        );
        assert!(
            refresher.locks.lock().expect("locks").is_empty(),
            "the lock is forgotten"
        );
        Ok(())
    }

    /// Tokens the database refused to store are not lost (the provider retired `rt-1`): the
    /// call goes on with them, later refreshes use them without a token request, and they
    /// are stored once the database takes writes again.
    #[tokio::test]
    async fn refreshed_tokens_the_database_refused_are_kept_and_stored_later() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = vault_in(&dir)?;
        let (record, provider, refresher, database) = kept_tokens(&dir, &vault).await?;
        let stored = || -> anyhow::Result<(String, Option<String>)> {
            let current = vault.connection_by_id(record.id)?.context("the connection")?;
            let tokens = vault.tokens(&current)?;
            Ok((tokens.access_token, tokens.refresh_token))
        };
        assert_eq!(stored()?, ("at-1".into(), Some("rt-1".into())), "not stored yet");
        let again = refresh_in_task(&refresher, &record).await??;
        assert_eq!(again.access_token, "at-2", "served from memory");
        // Past the pause before the database is asked again; it refuses the lease too (a full
        // disk refuses every write): still served from memory.
        // (Unless the background task stored them meanwhile, as it may on a slow machine.)
        let pause_over = || {
            if let Some(kept) = refresher.unsaved.lock().expect("unsaved").get_mut(&record.id) {
                kept.store_failed_at = std::time::Instant::now()
                    .checked_sub(UNSAVED_STORE_RETRY)
                    .expect("uptime");
            }
        };
        pause_over();
        database.execute_batch(
            "CREATE TRIGGER refuse_leases BEFORE INSERT ON refresh_leases
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        )?;
        let no_lease = refresh_in_task(&refresher, &record).await??;
        assert_eq!(
            no_lease.access_token, "at-2",
            "served from memory without a lease"
        );
        let paused_again = refresher.unsaved.lock().expect("unsaved")[&record.id]
            .store_failed_at
            .elapsed()
            < UNSAVED_STORE_RETRY;
        assert!(paused_again, "the refused lease starts another pause");

        database.execute_batch("DROP TRIGGER refuse_secrets; DROP TRIGGER refuse_leases;")?;
        pause_over();
        let settled = refresh_in_task(&refresher, &record).await??;
        assert_eq!(settled.access_token, "at-2");
        assert_eq!(stored()?, ("at-2".into(), Some("rt-2".into())), "stored at last");
        assert_eq!(provider.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(refresher.unsaved.lock().expect("unsaved").is_empty());
        Ok(())
    }

    /// Kept tokens are stored once the database takes writes again, with no call asking for
    /// the connection meanwhile.
    #[tokio::test]
    async fn kept_tokens_are_stored_in_the_background() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = vault_in(&dir)?;
        let (record, provider, refresher, database) = kept_tokens(&dir, &vault).await?;
        database.execute_batch("DROP TRIGGER refuse_secrets;")?;
        let stored_access_token = || -> anyhow::Result<String> {
            let current = vault.connection_by_id(record.id)?.context("the connection")?;
            Ok(vault.tokens(&current)?.access_token)
        };
        let deadline = tokio::time::Instant::now() + UNSAVED_STORE_RETRY * 4;
        let kept = || refresher.unsaved.lock().expect("unsaved").len();
        while stored_access_token()? != "at-2" || kept() != 0 {
            assert!(tokio::time::Instant::now() < deadline, "never stored");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(provider.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        Ok(())
    }

    /// A master-key rotation re-seals the stored tokens kept ones were refreshed from; they
    /// are still theirs: stored at the next refresh, with no second token request (which would
    /// send the retired `rt-1`).
    #[tokio::test]
    async fn kept_tokens_outlive_a_master_key_rotation() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (old, new) = ("ab".repeat(32), "cd".repeat(32));
        let path = dir.path().join("db");
        let vault = Vault::open(&path, &KeySource::Explicit(format!("{old},{new}")))?;
        let (record, provider, refresher, database) = kept_tokens(&dir, &vault).await?;
        database.execute_batch("DROP TRIGGER refuse_secrets;")?;
        let rotating = Vault::open(&path, &KeySource::Explicit(format!("{new},{old}")))?;
        assert_eq!(
            rotating.reencrypt_all(&crate::vault::crypto::MasterKey::parse(&new)?)?,
            1
        );
        if let Some(kept) = refresher.unsaved.lock().expect("unsaved").get_mut(&record.id) {
            kept.store_failed_at = std::time::Instant::now()
                .checked_sub(UNSAVED_STORE_RETRY)
                .expect("uptime");
        }
        let settled = tokio::time::timeout(Duration::from_secs(10), refresh_in_task(&refresher, &record))
            .await
            .context("no second token request")???;
        assert_eq!(settled.access_token, "at-2");
        let current = vault.connection_by_id(record.id)?.context("the connection")?;
        assert_eq!(vault.tokens(&current)?.refresh_token.as_deref(), Some("rt-2"));
        assert_eq!(provider.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        Ok(())
    }

    /// Tokens kept for a connection that is deleted meanwhile are forgotten at its next refresh.
    #[tokio::test]
    async fn kept_tokens_of_a_deleted_connection_are_forgotten() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = vault_in(&dir)?;
        let (record, _provider, refresher, _database) = kept_tokens(&dir, &vault).await?;
        assert_eq!(refresher.unsaved.lock().expect("unsaved").len(), 1);
        assert!(vault.delete_connection(Environment::Test, &record.key)?);
        assert!(refresh_in_task(&refresher, &record).await?.is_err());
        assert!(refresher.unsaved.lock().expect("unsaved").is_empty());
        Ok(())
    }

    /// Make `dir`'s database refuse to store secrets, and have `refresher` refresh `record`'s
    /// tokens: it answers `at-2`, kept in memory. Returns the connection holding the refusal
    /// (a trigger), on which a test may drop it.
    /// A Gmail connection on `vault` whose refresh the database refused to store (the
    /// refresher keeps `at-2`/`rt-2` unsaved): the connection, the token endpoint, the
    /// refresher, and a database connection whose trigger refuses secrets.
    type Kept = (
        ConnectionRecord,
        Arc<HeldProvider>,
        Arc<TokenRefresher>,
        rusqlite::Connection,
    );

    async fn kept_tokens(dir: &tempfile::TempDir, vault: &Vault) -> anyhow::Result<Kept> {
        let record = gmail_connection(vault)?;
        let provider = Arc::new(HeldProvider::default());
        let tasks = TaskTracker::new();
        let refresher = refresher(vault, &provider, &tasks);
        let database = rusqlite::Connection::open(dir.path().join("db"))?;
        database.execute_batch(
            "CREATE TRIGGER refuse_secrets BEFORE UPDATE OF secret_ciphertext ON connections
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        )?;
        let first = refresh_in_task(&refresher, &record);
        tokio::time::timeout(Duration::from_secs(10), provider.arrived.notified()).await?;
        provider.release.notify_one();
        assert_eq!(first.await??.access_token, "at-2", "the call goes on");
        Ok((record, provider, refresher, database))
    }

    /// Two gateways on one database, each asked to refresh the same connection: one token
    /// request between them (a provider rotating refresh tokens would refuse the second use of
    /// `rt-1`, or revoke everything), and both get the new tokens.
    #[tokio::test]
    async fn gateways_sharing_a_database_refresh_a_connection_once() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (first_vault, second_vault) = (vault_in(&dir)?, vault_in(&dir)?);
        let record = gmail_connection(&first_vault)?;
        let provider = Arc::new(HeldProvider::default());
        let tasks = TaskTracker::new();
        let first = refresher(&first_vault, &provider, &tasks);
        let second = refresher(&second_vault, &provider, &tasks);

        let first_call = refresh_in_task(&first, &record);
        tokio::time::timeout(Duration::from_secs(10), provider.arrived.notified()).await?;
        let second_call = refresh_in_task(&second, &record);
        // The second gateway waits for the first one's lease rather than sending `rt-1` again.
        tokio::time::sleep(LEASE_POLL * 4).await;
        assert_eq!(provider.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        provider.release.notify_one();
        for call in [first_call, second_call] {
            let tokens = tokio::time::timeout(Duration::from_secs(10), call).await??;
            assert_eq!(tokens.expect("refreshed").access_token, "at-2");
        }
        assert_eq!(provider.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The lease was given back: the next refresh may take it at once; it is the holder's
        // alone to give back.
        assert!(second_vault.take_refresh_lease(&record, "next", 10)?);
        assert!(
            !first_vault.take_refresh_lease(&record, "other", 10)?,
            "held by another"
        );
        first_vault.release_refresh_lease(&record, "other")?;
        assert!(
            !first_vault.take_refresh_lease(&record, "third", 10)?,
            "still held"
        );
        second_vault.release_refresh_lease(&record, "next")?;
        assert!(first_vault.take_refresh_lease(&record, "third", 10)?);
        Ok(())
    }

    /// A gateway that finds another's lease waits for that gateway's tokens and uses them: it
    /// never sends the refresh token it read before they were stored.
    #[tokio::test]
    async fn a_gateway_waiting_for_another_uses_the_tokens_it_stored() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (other_gateway, this_gateway) = (vault_in(&dir)?, vault_in(&dir)?);
        let record = gmail_connection(&other_gateway)?;
        assert!(other_gateway.take_refresh_lease(&record, "other", 60)?);
        let provider = Arc::new(HeldProvider::default());
        let tasks = TaskTracker::new();
        let refresher = refresher(&this_gateway, &provider, &tasks);
        let call = refresh_in_task(&refresher, &record);
        tokio::time::sleep(LEASE_POLL * 3).await;
        // The other gateway stores what its provider answered, then gives the lease back.
        let rotated = TokenSet {
            access_token: "at-other".into(),
            refresh_token: Some("rt-other".into()),
            expires_at: None,
            scope: None,
            refresh_refused: None,
        };
        assert!(other_gateway.store_tokens(&record, &rotated)?);
        other_gateway.release_refresh_lease(&record, "other")?;
        let tokens = tokio::time::timeout(Duration::from_secs(10), call).await??;
        assert_eq!(tokens.expect("fresh").access_token, "at-other");
        assert_eq!(provider.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
        Ok(())
    }

    #[test]
    fn short_lived_tokens_are_refreshed_at_half_life_not_on_every_call() {
        let margin = 300;
        // An hour-long token: refreshed within the last five minutes.
        assert!(!refresh_due(3600, 0, 3000, margin));
        assert!(refresh_due(3600, 0, 3300, margin));
        // A one-minute token stored at 0: used as is for 30 s, then refreshed.
        assert!(!refresh_due(60, 0, 10, margin));
        assert!(refresh_due(60, 0, 30, margin));
        // Without a usable storage time, the margin alone decides.
        assert!(refresh_due(60, 60, 10, margin));
    }

    /// How long a token lives is counted from when it was stored, not from the connection's
    /// last change: renaming it or a 401 does not put a proactive refresh off.
    #[test]
    fn a_tokens_life_is_counted_from_when_it_was_stored() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = vault_in(&dir)?;
        let record = gmail_connection(&vault)?;
        store_tokens_issued_an_hour_ago(&dir, &vault, &record)?;
        let renamed = ConnectionPatch {
            name: Some("renamed".into()),
            ..ConnectionPatch::default()
        };
        vault.update_connection(Environment::Test, &record.key, &renamed)?;
        vault.record_auth_outcome(&record, true, crate::vault::now_micros())?;
        let now_stored = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        let (tasks, provider) = (TaskTracker::new(), Arc::new(HeldProvider::default()));
        let refresher = refresher(&vault, &provider, &tasks);
        assert!(refresher.is_expiring(&now_stored, crate::vault::now()));
        Ok(())
    }

    #[test]
    fn a_storage_failure_reaches_the_caller_as_a_fixed_text() {
        let error = anyhow::anyhow!("disk I/O error").context("writing /var/lib/sluice/sluice.db");
        let RefreshError::Unavailable(message) = internal("storing the new tokens", &error) else {
            panic!("a storage failure is worth retrying");
        };
        assert_eq!(
            message,
            "storing the new tokens failed inside the gateway; see its log"
        );
    }
}
