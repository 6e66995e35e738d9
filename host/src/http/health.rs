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

/// Loaded connectors with their versions and content hashes.
async fn plugins(State(app): State<AppState>) -> Json<Value> {
    let rows: Vec<Value> = app
        .registry
        .snapshot()
        .values()
        .map(|c| {
            json!({
                "id": c.manifest.id,
                "name": c.manifest.name,
                "version": c.manifest.version,
                "hash": c.content_hash,
                "endpoints": c.manifest.endpoints.iter().map(|e| &e.name).collect::<Vec<_>>(),
                "state": "loaded",
            })
        })
        .collect();
    let failures: Vec<Value> = app
        .registry
        .failures()
        .values()
        .map(|f| json!({"file": f.path.display().to_string(), "error": f.error, "at": f.at}))
        .collect();
    Json(json!({"rows": rows, "total": rows.len(), "failures": failures}))
}
