//! Liveness and the list of loaded connectors.

use super::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/plugins", get(plugins))
}

/// Loaded connectors with their versions, content hashes and load times, and the files that
/// failed to load (a failed new version of a loaded connector shows as its `lastError`, while
/// the previous version keeps serving).
async fn plugins(State(app): State<AppState>) -> Json<Value> {
    let failures = app.registry.failures();
    let connectors = app.registry.snapshot();
    let rows: Vec<Value> = connectors
        .values()
        .map(|c| {
            let failure = c.source.as_ref().and_then(|source| failures.get(source));
            json!({
                "id": c.manifest.id,
                "name": c.manifest.name,
                "version": c.manifest.version,
                "hash": c.content_hash,
                "contract": c.contract,
                "file": c.source.as_ref().map(|p| p.display().to_string()),
                "loadedAt": c.loaded_at,
                "state": if failure.is_some() { "stale" } else { "loaded" },
                "lastError": failure.map(|f| &f.error),
                "endpoints": c.manifest.endpoints.iter().map(|e| &e.name).collect::<Vec<_>>(),
            })
        })
        .collect();
    let failures: Vec<Value> = failures
        .values()
        .map(|f| json!({"file": f.path.display().to_string(), "error": f.error, "at": f.at}))
        .collect();
    Json(json!({"rows": rows, "total": rows.len(), "failures": failures}))
}
