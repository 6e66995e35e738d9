//! Liveness and the list of loaded connectors.

use super::AppState;
use super::timestamps::rfc3339;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// The API address's share: the probes, the list of connectors and, unless `--ops-listen`
/// serves them, the metrics.
pub(super) fn router(with_metrics: bool) -> Router<AppState> {
    let router = liveness_and_readiness().route("/v1/plugins", get(plugins));
    match with_metrics {
        true => router.route("/metrics", get(metrics)),
        false => router,
    }
}

/// Liveness, readiness and metrics: what `--ops-listen` serves.
pub(super) fn probes() -> Router<AppState> {
    liveness_and_readiness().route("/metrics", get(metrics))
}

fn liveness_and_readiness() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
}

/// Ready once the connectors have loaded, when the database takes writes, until shutdown
/// begins; reports how many connectors are loaded and how many files failed to load. A failed
/// file leaves the gateway ready: the other connectors serve, and calls to the one that failed
/// say so (`connector_unavailable`); the count is there to alert on. A load that failed for
/// want of the database does not: it is tried again, and the gateway is not ready till then.
async fn ready(State(app): State<AppState>) -> axum::response::Response {
    let connectors = app.registry.snapshot().len();
    // Shutting down: a balancer should send no more calls (the API takes no new connections).
    if *app.stopping.borrow() {
        return not_ready("the gateway is shutting down", connectors, None, None);
    }
    if app.registry.is_starting() {
        return not_ready("the connectors are still loading", connectors, None, Some("1"));
    }
    let failures = app.registry.failures();
    let failed = failures.len();
    if failures.values().any(|failure| failure.retry_later) {
        return not_ready(
            "connectors failed to load for want of the database; their loads are tried again",
            connectors,
            Some(failed),
            Some("5"),
        );
    }
    match app.vault.run(|vault| vault.check_writable()).await {
        Ok(()) => Json(json!({
            "status": "ready",
            "connectors": connectors,
            "failed": failed,
            "database": "writable"
        }))
        .into_response(),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "readiness check failed");
            // The route takes no key: the reason, not where the file is.
            let message = match error.downcast_ref::<crate::store::DatabaseFileReplaced>() {
                Some(_) => {
                    "the database file was removed or replaced while the gateway ran: restore it and restart the gateway"
                }
                None => "the database is not writable",
            };
            not_ready(message, connectors, None, None)
        }
    }
}

/// A `503 not_ready` answer saying why, with the connectors loaded (and the files failed, when
/// that is the reason) and, when it is worth waiting, when to ask again.
fn not_ready(
    message: &str,
    connectors: usize,
    failed: Option<usize>,
    retry_after: Option<&'static str>,
) -> axum::response::Response {
    let mut body = json!({"error": "not_ready", "message": message, "connectors": connectors});
    if let Some(failed) = failed {
        body["failed"] = json!(failed);
    }
    let mut response = (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static(seconds),
        );
    }
    response
}

/// Prometheus text exposition.
async fn metrics(State(app): State<AppState>) -> impl axum::response::IntoResponse {
    app.metrics
        .instances_in_use
        .set(app.runtime.instances_in_use() as i64);
    app.metrics.spare_instances.set(app.runtime.spares_alive() as i64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// A component's name in the plugins directory. The route needs no key, so it does not show
/// where on the machine that directory is.
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
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
                "file": c.source.as_deref().map(file_name),
                "loadedAt": rfc3339(c.loaded_at),
                "state": if failure.is_some() { "stale" } else { "loaded" },
                "lastError": failure.map(|f| &f.error),
                "endpoints": c.manifest.endpoints.iter().map(|e| &e.name).collect::<Vec<_>>(),
            })
        })
        .collect();
    let failures: Vec<Value> = failures
        .values()
        .map(|f| json!({"file": file_name(&f.path), "error": f.error, "at": rfc3339(f.at)}))
        .collect();
    let shadowed: Vec<Value> = app
        .registry
        .shadowed()
        .values()
        .map(|s| {
            let by = connectors
                .get(&s.id)
                .and_then(|c| c.source.as_deref())
                .map(file_name);
            json!({"file": file_name(&s.path), "id": s.id, "by": by, "at": rfc3339(s.at)})
        })
        .collect();
    let mut answer = json!({"rows": rows, "total": rows.len(), "failures": failures, "shadowed": shadowed});
    if let Some(builds) = &app.dev_builds {
        let failed: Vec<Value> = builds
            .current()
            .into_iter()
            .map(|b| json!({"source": b.source, "output": b.output, "at": rfc3339(b.at)}))
            .collect();
        answer["builds"] = json!({"failed": failed});
    }
    Json(answer)
}
