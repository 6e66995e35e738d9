//! Which connection a call uses, and the credential that goes upstream for it.
//!
//! For OAuth connectors the stored secret is a token set: an access token that expires
//! within the refresh margin is refreshed before the call (proactively), and the call gets a
//! renewal hook so an upstream 401 triggers one refresh and one retry (reactively).
//! How the upstream then treats the credential moves the connection's `state`.

use super::AppState;
use crate::error::ApiError;
use crate::oauth::refresh::{ConnectionRenewal, RefreshError, Trigger};
use crate::runtime::manifest::{AuthScheme, Manifest};
use crate::runtime::{CallContext, Credential, RenewalFailure};
use crate::vault::api_keys::Environment;
use crate::vault::connections::{ConnectionRecord, ConnectionSelector, HealthChange, TokenSet};
use std::sync::Arc;

/// Pick the connection: explicit key, else identity, else the key owner's default (the one
/// made without an identity); decrypt its secret.
pub(super) async fn select(
    app: &AppState,
    integration: &str,
    environment: Environment,
    selector: ConnectionSelector,
) -> Result<(ConnectionRecord, Credential), ApiError> {
    // The identity may reach a connect session's `action_url` and from there a connection's
    // key: the vault API's rule applies to it here too.
    if let Some(identity) = &selector.identity {
        crate::vault::checks::check_identity("`identity`", identity).map_err(ApiError::BadRequest)?;
    }
    // As `/mcp?connection_key=` is: a key built from an empty variable is a mistake, not a
    // connection that happens not to exist.
    if selector
        .connection_key
        .as_deref()
        .is_some_and(|key| key.trim().is_empty())
    {
        return Err(ApiError::BadRequest(
            "`connection_key` is empty: give a connection's key or leave it out".into(),
        ));
    }
    if let Some(kind) = &selector.identity_type {
        if selector.identity.is_none() {
            return Err(ApiError::BadRequest(
                "`identity_type` says what kind of owner `identity` names: give `identity` too".into(),
            ));
        }
        crate::vault::checks::check_identity_type("`identity_type`", kind).map_err(ApiError::BadRequest)?;
    }
    let explicit = selector.connection_key.is_some() || selector.identity.is_some();
    let platform = integration.to_owned();
    let generation = app.vault.current_generation()?;
    let selection = (
        integration.to_owned(),
        environment,
        selector.connection_key.clone(),
        selector.identity.clone(),
        selector.identity_type.clone(),
    );
    if let Some(found) = app.vault.cache().connection(generation, &selection) {
        return Ok(found);
    }
    let found = app
        .vault
        .run(move |vault| {
            let mut found = vault.find_connections(&platform, environment, &selector)?;
            if !explicit {
                match owners_default(found) {
                    Ok(default) => found = default.into_iter().collect(),
                    Err(no_default) => return Ok(Err(no_default)),
                }
            } else if selector.connection_key.is_none() && found.len() > 1 {
                // Two accounts connected for one identity: which one acts is the caller's call.
                let identity = selector.identity.unwrap_or_default();
                let keys = found.into_iter().map(|c| c.key).collect();
                return Ok(Err(NoDefault::SeveralForIdentity(identity, keys)));
            }
            let Some(connection) = found.pop() else {
                return Ok(Ok(None));
            };
            let credential = vault.credential(&connection)?;
            Ok(Ok(Some((connection, credential))))
        })
        .await?
        .map_err(|no_default| no_default.into_error(integration))?;
    let Some(found) = found else {
        let (_, _, named_key, identity, identity_type) = selection;
        // A key that names nothing usable is a mistake to report, not a reason to connect
        // another account.
        if let Some(key) = named_key {
            let for_identity = crate::error::for_identity(identity.as_deref());
            let other = crate::error::other_environment(&key, environment);
            return Err(ApiError::NotFound(format!(
                "no active {integration} connection `{key}`{for_identity} in this environment{other}"
            )));
        }
        return Err(ApiError::IntegrationNotConnected {
            action_url: super::connect::first_connect_url(
                app,
                environment,
                integration,
                identity.clone(),
                identity_type,
            )
            .await,
            integration: integration.to_owned(),
            identity,
        });
    };
    app.vault
        .cache()
        .remember_connection(generation, selection, found.clone());
    Ok(found)
}

/// Without a connection key or identity, a call uses the key owner's default connection: the
/// one made without an identity (its key reads `…::default::…`). Connections made for an
/// identity belong to the app's end users and are used only when a call names them, even when
/// one is all there is: an app that forgets `identity` must not act as whichever user
/// connected first. `Ok(None)`: no connection at all.
fn owners_default(found: Vec<ConnectionRecord>) -> Result<Option<ConnectionRecord>, NoDefault> {
    if found.is_empty() {
        return Ok(None);
    }
    let mut defaults: Vec<ConnectionRecord> = found.into_iter().filter(|c| c.identity.is_none()).collect();
    match defaults.len() {
        0 => Err(NoDefault::OnlyForIdentities),
        1 => Ok(defaults.pop()),
        _ => Err(NoDefault::Several(defaults.into_iter().map(|c| c.key).collect())),
    }
}

/// Why a call that names no connection key has no one connection to use.
#[derive(Debug)]
enum NoDefault {
    /// It names no identity either, and every active connection belongs to one.
    OnlyForIdentities,
    /// It names no identity, and several were made without one (their keys).
    Several(Vec<String>),
    /// Several belong to the identity it names (the identity, their keys).
    SeveralForIdentity(String, Vec<String>),
}

impl NoDefault {
    fn into_error(self, integration: &str) -> ApiError {
        match self {
            Self::OnlyForIdentities => ApiError::AmbiguousConnection {
                message: format!(
                    "every active {integration} connection belongs to an identity, and this call names none: \
                     name `identity` or `connection_key` (GET /v1/vault/connections?platform={integration} lists them)"
                ),
                // End users' connections may be many: the message says where they are listed.
                candidates: Vec::new(),
            },
            Self::Several(candidates) => ambiguous(integration, "were made without an identity", &candidates),
            Self::SeveralForIdentity(identity, candidates) => ambiguous(
                integration,
                &format!("belong to identity `{identity}`"),
                &candidates,
            ),
        }
    }
}

/// Fill `context` with the credential for `record`: the stored secret as is, or for an OAuth
/// connector the (refreshed if need be) access token and a renewal hook.
pub(super) async fn attach_credential(
    app: &AppState,
    manifest: &Manifest,
    record: &ConnectionRecord,
    stored: Credential,
    context: &mut CallContext,
) -> Result<(), ApiError> {
    context.base_url_override = record.base_url.clone();
    let AuthScheme::OAuth2(declared) = &manifest.auth else {
        context.credential = Some(stored);
        return Ok(());
    };
    let mut tokens = TokenSet::from_secret(stored.secret());
    // Once the provider refused to refresh them, every call says so, with the reconnect link,
    // until the user reconnects: not some calls answered while the access token lasts.
    if let Some(reason) = tokens.refresh_refused {
        let failure = RenewalFailure {
            revoked: true,
            message: format!("the provider refused the refresh: {reason}"),
        };
        return Err(rejected(app, record, failure).await);
    }
    let now = crate::vault::now();
    // Without a refresh token (a provider that gives none) there is nothing to refresh with:
    // the token is used for as long as it lasts, and the call after that says to reconnect.
    let can_renew = tokens.refresh_token.is_some() || record.token_expires_at.is_some_and(|at| at <= now);
    if can_renew && app.refresher.is_expiring(record, now) {
        match app
            .refresher
            .refresh(&manifest.id, declared, record, Trigger::Expiring)
            .await
        {
            Ok(fresh) => tokens = fresh,
            // Still valid for a while: use it, and try again on the next call.
            Err(RefreshError::Unavailable(reason)) if record.token_expires_at.is_some_and(|at| at > now) => {
                tracing::warn!(connection = %record.key, %reason, "proactive refresh failed; using the current token");
            }
            Err(error) => return Err(rejected(app, record, error.into()).await),
        }
    }
    context.credential = Some(Credential::new(tokens.access_token));
    context.renewal = Some(Arc::new(ConnectionRenewal::new(
        app.refresher.clone(),
        &manifest.id,
        declared.clone(),
        record.clone(),
    )));
    Ok(())
}

/// The caller-facing error for a credential that could not be renewed: a revoked grant gets a
/// reconnect link for this very connection.
pub(super) async fn rejected(app: &AppState, record: &ConnectionRecord, failure: RenewalFailure) -> ApiError {
    if !failure.revoked {
        return ApiError::TokenRefreshFailed(failure.message);
    }
    ApiError::TokenExpired {
        action_url: super::connect::reconnect_url(app, record).await,
        integration: record.platform.clone(),
        reason: failure.message,
    }
}

/// Most candidate keys an ambiguous call's error names; the vault API lists them all.
pub(super) const CANDIDATES_NAMED: usize = 5;

/// The error for a call that several connections could serve, which `share` what the call
/// named.
fn ambiguous(integration: &str, share: &str, candidates: &[String]) -> ApiError {
    let named = candidates[..candidates.len().min(CANDIDATES_NAMED)].join(", ");
    let more = match candidates.len().saturating_sub(CANDIDATES_NAMED) {
        0 => String::new(),
        rest => format!(" and {rest} more: GET /v1/vault/connections?platform={integration} lists them"),
    };
    ApiError::AmbiguousConnection {
        message: format!(
            "several active {integration} connections {share}; name one by `connection_key` (one of: {named}{more})"
        ),
        candidates: candidates[..candidates.len().min(CANDIDATES_NAMED)].to_vec(),
    }
}

/// Update the connection's state from how the upstream treated its credential (execute and
/// passthrough alike), off the response path. `sent_at_us` is when the call took the
/// credential: updates may land out of order, and an answer to an earlier call does not
/// overrule one recorded for a later call.
pub(super) fn track_credential_health(
    app: &AppState,
    record: ConnectionRecord,
    status: u16,
    sent_at_us: i64,
) {
    let unauthorized = status == 401;
    let success = (200..300).contains(&status);
    // The common case — a healthy connection answered successfully — changes nothing, so
    // it costs no trip to the vault's thread pool.
    let healthy = record.consecutive_auth_failures == 0 && record.state == "operational";
    if (!unauthorized && !success) || (success && healthy) {
        return;
    }
    let (vault, metrics) = (app.vault.clone(), app.metrics.clone());
    app.tasks.spawn(async move {
        let (key, integration) = (record.key.clone(), record.platform.clone());
        match vault
            .run(move |vault| vault.record_auth_outcome(&record, unauthorized, sent_at_us))
            .await
        {
            Ok(HealthChange::None) => {}
            Ok(HealthChange::Failed) => {
                metrics.count_connection_failed(&integration);
                tracing::warn!(
                    %integration,
                    connection = %key,
                    "connection failed: the upstream refused its credential {} times in a row (401); \
                     calls with it keep being sent, and the user should reconnect",
                    crate::vault::connections::FAILED_AFTER_AUTH_FAILURES
                );
            }
            Ok(HealthChange::Recovered) => {
                tracing::info!(%integration, connection = %key, "connection works again: the upstream accepted its credential");
            }
            Err(error) => {
                tracing::error!(connection = %key, error = %format!("{error:#}"), "could not update connection state");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ambiguous_call_names_a_few_candidates_and_where_to_find_the_rest() {
        let keys: Vec<String> = (0..8).map(|i| format!("test::github::u{i}::1")).collect();
        let message = ambiguous("github", "were made without an identity", &keys).to_string();
        assert!(message.contains("test::github::u4::1"), "{message}");
        assert!(!message.contains("test::github::u5::1"), "{message}");
        assert!(
            message.contains("and 3 more: GET /v1/vault/connections?platform=github"),
            "{message}"
        );
        let message = ambiguous("github", "were made without an identity", &keys[..2]).to_string();
        assert!(
            message.ends_with("(one of: test::github::u0::1, test::github::u1::1)"),
            "{message}"
        );
    }
}
