//! Persistence behind a trait: [`Store`] is everything the vault needs from a database, and
//! [`SqliteStore`] is the one implementation today.
//!
//! The trait exists so that another backend (PostgreSQL shared by several gateway replicas, say)
//! can be added without touching the gateway or the runtime: they talk to the
//! [`Vault`](crate::vault::Vault), and the vault talks to an `Arc<dyn Store>`.
//!
//! What every backend must guarantee:
//!
//! - **Secrets cross the trait sealed.** The vault generates keys, hashes API keys, connect
//!   tokens and OAuth states, and seals secrets with the master keyring *before* calling the
//!   store; a store receives [`Sealed`] values (key id, nonce, ciphertext) and hashes, and never
//!   sees a master key or a plain-text secret. A backend therefore cannot store a secret in
//!   plain text by mistake.
//! - **The credentials generation** ([`Store::credentials_generation`]) is the cross-process
//!   cache invalidation counter: every change to `api_keys` or `connections` must increase it,
//!   whichever process makes it, in the same transaction as the change. The in-memory credential
//!   cache of every gateway trusts its entries only while the generation stands still. SQLite
//!   does this with triggers (schema version 5); a new backend must do the same.
//! - **Atomic methods stay atomic**: where a method's doc says one write (the plan-limit check
//!   and insert, taking an OAuth state, replacing a secret, re-encrypting a batch), the backend
//!   commits it as one transaction, durably, before returning.
//! - **The store has no clock of its own.** Times (Unix seconds unless named `_ms`) come in as
//!   arguments, so expiry and timestamps follow the vault's clock, whatever the backend. A
//!   write whose time orders it against calls in flight (connection health) takes the vault's
//!   clock instead ([`Clock`]) and reads it once it holds the write lock: a time read before
//!   waiting for the lock would date the write earlier than calls that read the old row.
//!
//! Methods block; async callers reach them through [`Vault::run`](crate::vault::Vault::run).

mod sqlite;

pub use sqlite::{SqliteStore, held_by_another_process, passes_by_itself, worth_retrying};

use crate::vault::api_keys::{ApiKey, Environment, KeyOptions};
use crate::vault::connect_sessions::{ConnectSession, NewSession};
use crate::vault::connections::{
    ConnectionFilter, ConnectionPage, ConnectionRecord, ConnectionSelector, PlanLimitReached,
};
use crate::vault::crypto::Sealed;
use crate::vault::logs::{LogFilter, RequestLog};
use crate::vault::oauth_apps::OAuthApp;
use url::Url;

/// A new connection as the store receives it: its key chosen and its secret sealed.
#[derive(Debug, Clone)]
pub struct NewConnectionRow {
    /// Public key, e.g. `test::github::default::3f9a…`.
    pub key: String,
    /// Connector id.
    pub platform: String,
    /// Environment.
    pub environment: Environment,
    /// Owner identity.
    pub identity: Option<String>,
    /// Identity kind.
    pub identity_type: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Base URL override.
    pub base_url: Option<Url>,
    /// Expiry of an OAuth access token (Unix seconds).
    pub token_expires_at: Option<i64>,
    /// Creation time, also the first `updated_at` (Unix seconds).
    pub created_at: i64,
    /// The secret, sealed.
    pub sealed: Sealed,
}

/// Changes to a stored connection; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ConnectionChanges {
    /// New display name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// Enable or disable.
    pub active: Option<bool>,
    /// New base URL (`Some(None)` clears it).
    pub base_url: Option<Option<Url>>,
    /// New sealed secret; also makes the connection operational with no auth failures, and
    /// forgets the old token's expiry (a secret given this way has none the gateway knows).
    pub sealed: Option<Sealed>,
}

/// An OAuth attempt as [`Store::take_oauth_state`] hands it over: the verifier still sealed.
#[derive(Debug)]
pub struct TakenOAuthState {
    /// The session the attempt belongs to.
    pub session: ConnectSession,
    /// Digest of the browser-binding cookie set when the attempt started.
    pub browser_hash: Vec<u8>,
    /// The sealed PKCE code verifier.
    pub verifier: Sealed,
    /// The origin the credential was to be used with when the attempt started (`None`: an
    /// attempt started before gateways recorded it).
    pub destination: Option<String>,
}

/// A kept reply of an idempotent call, as key rotation reads it.
#[derive(Debug)]
pub struct IdempotentRow {
    /// The row's id.
    pub row_id: i64,
    /// The API key's row id.
    pub api_key_id: i64,
    /// The idempotency key.
    pub key: String,
    /// The reply, sealed.
    pub sealed: Sealed,
}

/// What an idempotency key held when a call claimed it.
#[derive(Debug)]
pub struct HeldKey {
    /// Digest of what the call under the key asked for.
    pub fingerprint: Vec<u8>,
    /// The gateway's HTTP status of its reply; `None` while it runs.
    pub http_status: Option<u16>,
    /// The upstream status the reply reported, if it reported one.
    pub upstream_status: Option<u16>,
    /// Its reply, sealed; `None` while it runs.
    pub reply: Option<Sealed>,
}

/// The vault's clock in microseconds since the epoch, read by the store inside a write.
pub type Clock = fn() -> i64;

/// The persistence contract of the vault; see the module docs for what every backend guarantees.
/// Each method is one read or one write (one transaction), unless its doc says otherwise.
pub trait Store: Send + Sync + 'static {
    // ---- The store itself: metadata and the credentials generation ----

    /// Where the data lives, for messages: a file path, or an address without credentials.
    fn location(&self) -> String;

    /// Fails unless a write could be committed now (readiness checks). Changes nothing, unless
    /// a write failed for want of storage (a full disk): then it commits a small write, as only
    /// that shows the trouble is over.
    fn check_writable(&self) -> anyhow::Result<()>;

    /// Write a consistent copy of all the data to the new file `destination` (readable by this
    /// user only) while the store stays in use. Secrets stay sealed in it: it opens only with
    /// the master key they were sealed with.
    fn back_up(&self, destination: &std::path::Path) -> anyhow::Result<()>;

    /// The id of the primary master key recorded with the data; `None` when none was ever
    /// recorded (a new, empty store).
    fn master_key_id(&self) -> anyhow::Result<Option<String>>;

    /// Record `key_id` as the id of the primary master key, replacing any previous one.
    fn set_master_key_id(&self, key_id: &str) -> anyhow::Result<()>;

    /// Every key id that sealed a stored connection secret or OAuth client secret, once each.
    fn sealing_key_ids(&self) -> anyhow::Result<Vec<String>>;

    /// The credentials generation: increases with every change to API keys or connections,
    /// made by any process. Read on the request path (through a memo), so it must be cheap.
    fn credentials_generation(&self) -> anyhow::Result<i64>;

    // ---- API keys (stored only as hashes) ----

    /// Store a new key with hash `hash` and visible `prefix`; returns its row id.
    fn insert_api_key(
        &self,
        prefix: &str,
        hash: &[u8],
        options: &KeyOptions,
        created_at: i64,
    ) -> anyhow::Result<i64>;

    /// The key whose hash is `hash`, revoked or expired ones included; `None`: no such key.
    fn api_key_by_hash(&self, hash: &[u8]) -> anyhow::Result<Option<ApiKey>>;

    /// Every key, newest first.
    fn list_api_keys(&self) -> anyhow::Result<Vec<ApiKey>>;

    /// Revoke at `at` the unrevoked key whose prefix is `prefix_or_id` or whose row id it
    /// spells, if exactly one is; returns the ids of every unrevoked key that matched.
    fn revoke_api_key(&self, prefix_or_id: &str, at: i64) -> anyhow::Result<Vec<i64>>;

    /// How many keys were ever created, revoked ones included.
    fn count_api_keys(&self) -> anyhow::Result<i64>;

    // ---- Connections (secrets sealed) ----

    /// Insert a connection and return its row id. With `limit`, counting the environment's
    /// connections and inserting are one atomic step, so concurrent inserts cannot overshoot.
    fn insert_connection(
        &self,
        row: &NewConnectionRow,
        limit: Option<u32>,
    ) -> anyhow::Result<Result<i64, PlanLimitReached>>;

    /// The active connections of `platform` in `environment` matching `selector`, oldest first.
    fn find_connections(
        &self,
        platform: &str,
        environment: Environment,
        selector: &ConnectionSelector,
    ) -> anyhow::Result<Vec<ConnectionRecord>>;

    /// One page (1-based, `limit` rows) of the environment's connections matching `filter`,
    /// newest first, with the number matching on all pages.
    fn list_connections(
        &self,
        environment: Environment,
        filter: &ConnectionFilter,
        page: u32,
        limit: u32,
    ) -> anyhow::Result<ConnectionPage>;

    /// The connection in `environment` whose public id (`conn_N`) or key is `id_or_key`.
    fn get_connection(
        &self,
        environment: Environment,
        id_or_key: &str,
    ) -> anyhow::Result<Option<ConnectionRecord>>;

    /// The connection with row id `id`, whatever its environment.
    fn connection_by_id(&self, id: i64) -> anyhow::Result<Option<ConnectionRecord>>;

    /// Apply `changes` to connection `id` in one write at the time `clock`
    /// reads (a new secret clears its health as of then); nothing happens if there is no such
    /// connection.
    fn update_connection(&self, id: i64, changes: &ConnectionChanges, clock: Clock) -> anyhow::Result<()>;

    /// Delete the connection in `environment` whose public id or key is `id_or_key`; returns
    /// whether one was deleted.
    fn delete_connection(&self, environment: Environment, id_or_key: &str) -> anyhow::Result<bool>;

    /// Count one more consecutive auth failure of connection `id`, answered to a call sent at
    /// `sent_at_us` (read and increment in one write, at the time `clock` reads): its state becomes `failed`
    /// once the count reaches `failed_after`, else `degraded` (a `failed` one stays so). Not
    /// counted if a success of a later call, or a new secret, is recorded already.
    /// Returns whether this failure is the one that made it `failed`.
    fn record_auth_failure(
        &self,
        id: i64,
        failed_after: i64,
        sent_at_us: i64,
        clock: Clock,
    ) -> anyhow::Result<bool>;

    /// Clear connection `id`'s auth failures and make it `operational`, for a success of a call
    /// sent at `sent_at_us`, unless a 401 to a later call (or a refused refresh) is recorded
    /// already. Returns whether it was `failed` and now is not.
    fn record_auth_success(&self, id: i64, sent_at_us: i64, clock: Clock) -> anyhow::Result<bool>;

    /// Replace connection `id`'s sealed secret and token expiry (and its base URL, if one is
    /// given) in one durable write at the time `clock` reads, making it operational with no auth failures:
    /// answers to calls sent before it no longer count.
    fn replace_connection_secret(
        &self,
        id: i64,
        sealed: &Sealed,
        token_expires_at: Option<i64>,
        base_url: Option<&Url>,
        clock: Clock,
    ) -> anyhow::Result<()>;

    /// Mark connection `id` `failed` at the time `clock` reads: its credential no longer works,
    /// whatever calls sent before then answered. Nothing happens if its secret is no longer the
    /// one sealed as `secret_ciphertext` (a reconnect meanwhile). Returns whether it was not
    /// failed before and is now.
    fn mark_connection_failed(&self, id: i64, secret_ciphertext: &[u8], clock: Clock)
    -> anyhow::Result<bool>;

    /// Take connection `id`'s refresh lease for `holder` until `until`, unless another holder's
    /// lasts past `now`; returns whether it was taken. Gateways sharing the store refresh a
    /// connection one at a time.
    fn take_refresh_lease(&self, id: i64, holder: &str, now: i64, until: i64) -> anyhow::Result<bool>;

    /// Give connection `id`'s refresh lease up, if `holder` still has it.
    fn release_refresh_lease(&self, id: i64, holder: &str) -> anyhow::Result<()>;

    /// Give connection `id` refreshed tokens, sealed as `sealed`, with their expiry, unless its
    /// secret is no longer the one sealed as `previous_ciphertext` (a reconnect, or another
    /// gateway's refresh, stored newer ones). Its health is left as it is: only an upstream's
    /// answer says whether the new token works. Returns whether it was changed.
    fn store_refreshed_tokens(
        &self,
        id: i64,
        previous_ciphertext: &[u8],
        sealed: &Sealed,
        token_expires_at: Option<i64>,
        at: i64,
    ) -> anyhow::Result<bool>;

    /// Mark connection `id` `failed` and give it the sealed secret `sealed`, in one write at
    /// the time `clock` reads, unless its secret is no longer the one sealed as `previous_ciphertext`. Returns
    /// whether it was changed and not failed before.
    fn fail_connection_with_secret(
        &self,
        id: i64,
        previous_ciphertext: &[u8],
        sealed: &Sealed,
        clock: Clock,
    ) -> anyhow::Result<bool>;

    /// Up to `limit` connections whose secret was sealed by a key other than `key_id`, by row
    /// id: `(row id, connection key, sealed secret)`.
    fn connections_sealed_with_other_keys(
        &self,
        key_id: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<(i64, String, Sealed)>>;

    /// In one write: give each `(row id, previous key id, resealed secret)` connection its
    /// resealed secret, skipping a row whose key id is no longer the previous one (its secret
    /// was replaced meanwhile), and record `primary_key_id` as the master key id.
    fn replace_sealed_secrets(
        &self,
        resealed: &[(i64, String, Sealed)],
        primary_key_id: &str,
    ) -> anyhow::Result<()>;

    // ---- OAuth apps (client secrets sealed) ----

    /// Insert `app`, or replace the app of its platform keeping the original `created_at`.
    fn upsert_oauth_app(&self, app: &OAuthApp) -> anyhow::Result<()>;

    /// The app of `platform`; `None`: none registered.
    fn oauth_app(&self, platform: &str) -> anyhow::Result<Option<OAuthApp>>;

    /// Every app, by platform.
    fn list_oauth_apps(&self) -> anyhow::Result<Vec<OAuthApp>>;

    /// Remove the app of `platform`; returns whether there was one.
    fn delete_oauth_app(&self, platform: &str) -> anyhow::Result<bool>;

    /// Give `platform`'s app the resealed client secret in one write, unless its key id is no
    /// longer `previous_key_id` (the secret was replaced meanwhile).
    fn replace_oauth_app_secret(
        &self,
        platform: &str,
        previous_key_id: &str,
        sealed: &Sealed,
    ) -> anyhow::Result<()>;

    // ---- Connect sessions (tokens and states hashed, PKCE verifiers sealed) ----

    /// Store a new pending session whose URL token hashes to `token.0`, with the token itself
    /// sealed (`token.1`) when it may be handed out again; created at `lifetime.0` and
    /// expiring at `lifetime.1` (Unix seconds).
    fn insert_connect_session(
        &self,
        public_id: &str,
        token: (&[u8], Option<&Sealed>),
        new: &NewSession,
        lifetime: (i64, i64),
    ) -> anyhow::Result<()>;

    /// The newest pending session with a kept (sealed) token that is for what `new` is for
    /// (environment, integration, identity and its type, connection to reconnect; no base or
    /// return URL)
    /// and expires after `expiring_after`, with its sealed token.
    fn reusable_connect_session(
        &self,
        new: &NewSession,
        expiring_after: i64,
    ) -> anyhow::Result<Option<(ConnectSession, Sealed)>>;

    /// The session whose URL token hashes to `token_hash`.
    fn connect_session_by_token_hash(&self, token_hash: &[u8]) -> anyhow::Result<Option<ConnectSession>>;

    /// The session with public id `public_id` in `environment`.
    fn connect_session(
        &self,
        environment: Environment,
        public_id: &str,
    ) -> anyhow::Result<Option<ConnectSession>>;

    /// If session `session_id` is pending and not expired at `now`, replace its OAuth attempt
    /// (state hash, browser hash, sealed verifier, the credential's destination origin) in one
    /// write; returns whether it was.
    fn begin_oauth(
        &self,
        session_id: i64,
        state_hash: &[u8],
        browser_hash: &[u8],
        verifier: &Sealed,
        destination: &str,
        now: i64,
    ) -> anyhow::Result<bool>;

    /// Take the attempt whose state hashes to `state_hash`, if its session is pending and not
    /// expired at `now`, clearing state and verifier in the same write: at most one caller
    /// ever gets it. `None`: unknown, already taken, expired or no longer pending.
    fn take_oauth_state(&self, state_hash: &[u8], now: i64) -> anyhow::Result<Option<TakenOAuthState>>;

    /// Mark session `session_id` connected with `connection_key`, if it is pending; its state
    /// stops working. Whether it was pending.
    fn complete_connect_session(&self, session_id: i64, connection_key: &str) -> anyhow::Result<bool>;

    /// Mark session `session_id` failed with `code` and `reason`, if it is still pending; its
    /// state stops working. Whether it failed here.
    fn fail_connect_session(&self, session_id: i64, code: &str, reason: &str) -> anyhow::Result<bool>;

    /// Delete the sessions that expired before `cutoff`; returns how many.
    fn prune_connect_sessions(&self, cutoff: i64) -> anyhow::Result<usize>;

    // ---- Approved outbound hosts per connector ----

    /// The hosts approved for `connector`; `None`: none ever recorded.
    fn approved_hosts(&self, connector: &str) -> anyhow::Result<Option<Vec<String>>>;

    /// Record `hosts`, approved at `at`, as the approved set of `connector`, replacing any.
    fn approve_hosts(&self, connector: &str, hosts: &[String], at: i64) -> anyhow::Result<()>;

    /// Every connector's approved set, by connector id.
    fn all_approved_hosts(&self) -> anyhow::Result<Vec<(String, Vec<String>)>>;

    // ---- Idempotent calls (replies sealed) ----

    /// In one write: claim `(api_key_id, key)` until `claimed_until` for a call with
    /// `fingerprint` if no call holds it, if its call never finished and its claim ran out
    /// before `now`, or if it was claimed before `expired_before` (`None`: claimed); else what
    /// the key holds, unchanged.
    fn claim_idempotent_call(
        &self,
        api_key_id: i64,
        key: &str,
        fingerprint: &[u8],
        now: i64,
        claimed_until: i64,
        expired_before: i64,
    ) -> anyhow::Result<Option<HeldKey>>;

    /// Keep the sealed reply of the call holding `(api_key_id, key)` with `fingerprint`, with
    /// its `(gateway status, upstream status)`.
    fn finish_idempotent_call(
        &self,
        api_key_id: i64,
        key: &str,
        fingerprint: &[u8],
        statuses: (u16, Option<u16>),
        reply: &Sealed,
    ) -> anyhow::Result<()>;

    /// Give up the claim of the unfinished call holding `(api_key_id, key)` with `fingerprint`.
    fn release_idempotent_call(&self, api_key_id: i64, key: &str, fingerprint: &[u8]) -> anyhow::Result<()>;

    /// Delete the calls claimed before `cutoff`; returns how many.
    fn prune_idempotent_calls(&self, cutoff: i64) -> anyhow::Result<usize>;

    /// Up to `limit` kept replies sealed by a key other than `key_id`.
    fn idempotent_replies_sealed_with_other_keys(
        &self,
        key_id: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<IdempotentRow>>;

    /// In one write: give each `(row id, previous nonce, resealed reply)` its resealed reply,
    /// skipping a row that no longer holds the reply read (its nonce changed).
    fn replace_idempotent_replies(&self, resealed: &[(i64, Vec<u8>, Sealed)]) -> anyhow::Result<()>;

    // ---- The request log ----

    /// Append `rows` in one write. Called by the log writer's thread: it must not queue behind
    /// this process's credential writes, and may trade durability of the last rows on power
    /// loss for speed.
    fn insert_request_logs(&self, rows: &[RequestLog]) -> anyhow::Result<()>;

    /// One page (1-based, `limit` rows) of log rows matching `filter`, newest first, with the
    /// number matching on all pages.
    fn list_request_logs(
        &self,
        filter: &LogFilter,
        page: u32,
        limit: u32,
    ) -> anyhow::Result<(Vec<RequestLog>, i64)>;

    /// How many rows of API key `key_id` at or after `since_ms` have an outcome not in
    /// `not_counted`.
    fn count_calls_since(&self, key_id: i64, since_ms: i64, not_counted: &[&str]) -> anyhow::Result<u64>;

    /// Delete the rows older than `before_ms`; returns how many.
    fn prune_request_logs(&self, before_ms: i64) -> anyhow::Result<usize>;
}

/// The database file was removed or replaced under the running gateway, whose connections go
/// on writing to the removed one: readiness fails, saying so.
#[derive(Debug, thiserror::Error)]
#[error("the database file {} was removed or replaced while the gateway ran: restore it and restart the gateway", .path.display())]
pub struct DatabaseFileReplaced {
    /// Where the database file was.
    pub path: std::path::PathBuf,
}
