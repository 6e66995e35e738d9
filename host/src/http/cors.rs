//! Cross-origin requests from browser apps (`--cors-origin`). Off unless the operator names
//! origins: an API key in a web page is readable by whoever loads the page, so serving browsers
//! is a choice the operator makes for the origins it trusts (an internal dashboard, an API
//! explorer reading `/openapi.json`).
//!
//! Preflights are answered before routing (no key needed, as browsers send none); every
//! response to an allowed origin, errors included, carries `Access-Control-Allow-Origin`, so
//! the page can read the API's error codes. Requested methods and headers are allowed as asked
//! (passthrough forwards the caller's own headers upstream); cookies are never involved, so
//! credentials mode stays off.

use axum::http::{HeaderName, HeaderValue};
use std::time::Duration;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// Response headers a page may read besides the CORS-safelisted ones.
const EXPOSED_HEADERS: &[&str] = &[
    "x-transaction-key",
    "x-request-id",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "mcp-session-id",
    "idempotent-replayed",
    "x-sluice-action-url",
    "x-sluice-connect-session-id",
];

/// A `--cors-origin` value: `*`, or an origin (`https://app.example.com`, a port if not the
/// scheme's default) in the form browsers send in `Origin`.
pub fn parse_origin(raw: &str) -> Result<String, String> {
    if raw == "*" {
        return Ok(raw.to_owned());
    }
    let example = "give one like https://app.example.com, or * for any";
    let url = url::Url::parse(raw).map_err(|e| format!("`{raw}` is not an origin ({e}); {example}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{raw}` is not an http(s) origin; {example}"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!("`{raw}` has more than scheme, host and port; {example}"));
    }
    // The browser's spelling: lower-case host, no default port, no trailing slash.
    Ok(url.origin().ascii_serialization())
}

/// The layer for `origins` (already checked by [`parse_origin`]); `None` when there are none.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(
                EXPOSED_HEADERS
                    .iter()
                    .map(|h| HeaderName::from_static(h))
                    .collect::<Vec<_>>(),
            )
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_origin;

    #[test]
    fn origins_are_checked_and_spelt_as_browsers_send_them() {
        assert_eq!(parse_origin("*").as_deref(), Ok("*"));
        assert_eq!(
            parse_origin("HTTPS://App.Example.com:443/").as_deref(),
            Ok("https://app.example.com")
        );
        assert_eq!(
            parse_origin("http://localhost:5173").as_deref(),
            Ok("http://localhost:5173")
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x.example",
            "https://x.example?q",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
