//! `GET /v1/logs`: the request log of the caller's environment.

use super::AppState;
use super::extract::Caller;
use super::query::Query;
use crate::error::ApiError;
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
        environment: key.environment.as_str().to_owned(),
        integration: query.text("integration"),
        endpoint: query.text("endpoint"),
        outcome: query.text("outcome"),
        key_prefix: query.text("keyPrefix"),
        transaction_key: query.text("transactionKey"),
        since_ms: query.integer("since", 0, i64::MAX)?,
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
    Ok(Json(page.envelope(rows, total)))
}
