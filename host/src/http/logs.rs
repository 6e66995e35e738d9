//! `GET /v1/logs`: the request log of the caller's environment.

use super::AppState;
use super::extract::Caller;
use super::query::Query;
use super::timestamps::{parse_rfc3339, rfc3339_millis};
use crate::error::{ApiError, OUTCOMES};
use crate::vault::logs::{LogFilter, ScopedReader};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/logs", get(list))
}

async fn list(
    State(app): State<AppState>,
    Caller(key): Caller,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let query = query.only(super::openapi::params::LOG_FILTERS)?;
    let page = query.pagination()?;
    let filter = LogFilter {
        environment: Some(key.environment.as_str().to_owned()),
        integrations: query.list("integration"),
        endpoints: query.list("endpoint"),
        connection_keys: query.selector_list("connectionKey")?,
        outcome: outcome(&query)?,
        key_prefix: query.text("keyPrefix"),
        transaction_key: query.text("transactionKey"),
        request_id: query.text("requestId"),
        since_ms: since_ms(&query)?,
        before_id: query.integer("before", 1, i64::MAX)?,
        upstream_status: upstream_status(&query)?,
        // A scoped key reads what concerns its integrations, as in the vault API, and its own
        // calls; other integrations' rows name connections (identities) it may not see.
        visible_to: key.scope.integrations().map(|integrations| ScopedReader {
            integrations: integrations.to_vec(),
            key_id: key.id,
        }),
    };
    let (rows, total) = app
        .vault
        .run(move |vault| vault.list_logs(&filter, page.page, page.limit))
        .await?;
    // Each row also gives its time as the rest of the API does; `createdAtMs` stays for
    // sorting and for `since`.
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let created_at = rfc3339_millis(row.created_at_ms);
            let mut view = serde_json::to_value(row).unwrap_or_default();
            view["createdAt"] = Value::String(created_at);
            view
        })
        .collect();
    Ok(Json(page.envelope(rows, total)))
}

/// The `outcome` filter: one of [`OUTCOMES`]. Anything else would match no row, and an empty
/// list would read as "no such calls" rather than "misspelt filter".
fn outcome(query: &Query) -> Result<Option<String>, ApiError> {
    match query.text("outcome") {
        Some(outcome) if !OUTCOMES.contains(&outcome.as_str()) => Err(ApiError::BadRequest(format!(
            "query parameter `outcome` must be `ok`, `client_closed` or an error code such as \
             `not_found` (all are listed in /openapi.json), not `{outcome}`"
        ))),
        outcome => Ok(outcome),
    }
}

/// The `upstreamStatus` filter: one status (`404`) or a class (`5xx`), as an inclusive range.
/// An upstream's 500 is the call's `ok` outcome (the gateway relayed it), so this is how an app
/// finds the calls its upstreams failed.
fn upstream_status(query: &Query) -> Result<Option<(u16, u16)>, ApiError> {
    let Some(wanted) = query.text("upstreamStatus") else {
        return Ok(None);
    };
    let class = wanted
        .to_ascii_lowercase()
        .strip_suffix("xx")
        .and_then(|digit| digit.parse::<u16>().ok())
        .filter(|digit| (1..=5).contains(digit))
        .map(|digit| (digit * 100, digit * 100 + 99));
    let exact = wanted
        .parse::<u16>()
        .ok()
        .filter(|status| (100..=599).contains(status))
        .map(|status| (status, status));
    class.or(exact).map(Some).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "query parameter `upstreamStatus` must be a status such as `404` or a class such as `5xx`, not `{wanted}`"
        ))
    })
}

/// Unix milliseconds below this (March 1973) are taken for Unix seconds, a likelier mistake than
/// asking for calls since 1970: as milliseconds they would match every row.
const SMALLEST_SINCE_MS: i64 = 100_000_000_000;

/// The `since` filter: Unix milliseconds or a UTC time such as `2030-01-31T12:00:00Z`.
fn since_ms(query: &Query) -> Result<Option<i64>, ApiError> {
    let Some(since) = query.text("since") else {
        return Ok(None);
    };
    if let Ok(number) = since.parse::<i64>()
        && (0..SMALLEST_SINCE_MS).contains(&number)
    {
        return Err(ApiError::BadRequest(format!(
            "query parameter `since` is Unix milliseconds, and `{since}` looks like seconds: \
             give `{since}000`, or a UTC time such as `2030-01-31T12:00:00Z`"
        )));
    }
    since
        .parse::<i64>()
        .ok()
        .filter(|ms| *ms >= 0)
        .or_else(|| parse_rfc3339(&since))
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "query parameter `since` must be a UTC time such as `2030-01-31T12:00:00Z` or \
                 Unix milliseconds, not `{since}`"
            ))
        })
}
