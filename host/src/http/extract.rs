//! Extractors that fail with the API's own error shape instead of axum's plain-text rejections.

use super::AppState;
use crate::error::ApiError;
use crate::vault::api_keys::ApiKey;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A whole request body; oversized, stalled or broken bodies become `payload_too_large`,
/// `request_timeout` / `bad_request`.
#[derive(Debug)]
pub struct WholeBody(pub Bytes);

impl FromRequest<AppState> for WholeBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if request.extensions().get::<KeyRefused>().is_some() {
            // The handler answers with the key's refusal; the body is never read.
            return Err(ApiError::Unauthorized(
                "the API key was refused; the body was not read".into(),
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!(
                    "request body is larger than {} bytes (the gateway's --max-call-body-mib)",
                    state.max_call_body
                ))
            } else if let Some(stalled) = crate::server::BodyStalled::found_in(&rejection) {
                ApiError::RequestTimeout(stalled.to_string())
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })?;
        Ok(Self(bytes))
    }
}

/// A JSON request body; malformed bodies become `bad_request`, others as [`WholeBody`] says.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let WholeBody(bytes) = WholeBody::from_request(request, state).await?;
        // A byte order mark some Windows tools put before UTF-8 text: JSON parsers may ignore
        // it (RFC 8259, 8.1), and this one does.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        if bytes.is_empty() {
            return Err(ApiError::BadRequest(
                "request body is empty; send a JSON object".into(),
            ));
        }
        // Every body of this API is an object; say so rather than report the first field of
        // an array that failed to match.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadRequest("request body must be a JSON object".into()));
        }
        // Name the offending field: `tags: invalid type: string, expected a sequence`.
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // Fields with two spellings (`connection_key`, `connectionKey`) are named by one.
            if inner.to_string().starts_with("duplicate field") {
                return ApiError::BadRequest(format!(
                    "invalid request body: {inner} (give each field once, in one of its spellings)"
                ));
            }
            if inner.is_syntax() || inner.is_eof() || path == "." {
                ApiError::BadRequest(format!("invalid request body: {inner}{}", hint_for(&inner)))
            } else {
                ApiError::BadRequest(format!("`{path}`: {inner}{}", hint_for(&inner)))
            }
        })?;
        deserializer
            .end()
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
        Ok(JsonBody(value))
    }
}

/// For a body field that chooses whose connection a call or flow uses (`identity`,
/// `connection_key`, …): left out is `None`, but `null` is refused. Many serialisers write a
/// missing value as `null`; taken as "none", an end user whose id the app lost would get, or
/// act through, the key owner's own connection.
pub(super) fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    match <Option<T> as serde::Deserialize>::deserialize(deserializer)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom(
            "null is not allowed here: give a value, or leave the field out",
        )),
    }
}

/// What serde_json's message leaves unsaid, where it misleads: a lone UTF-16 surrogate
/// (`"\ud800"` alone) is reported as a hex escape that ended early.
pub(super) fn hint_for(error: &serde_json::Error) -> &'static str {
    let message = error.to_string();
    match message.starts_with("unexpected end of hex escape") || message.starts_with("lone leading surrogate")
    {
        true => {
            " (a `\\uD800`-`\\uDFFF` escape must be one half of a surrogate pair: JSON text is Unicode, \
             and a lone half is no character)"
        }
        false => "",
    }
}

/// The caller's API key, checked against the vault: active and not expired.
#[derive(Debug)]
pub struct Caller(pub ApiKey);

/// Marks a request whose API key was refused, so that its body is not read: a caller
/// without a valid key could otherwise hold a connection (and a place among
/// `--max-connections`) for as long as it trickles a body in.
#[derive(Debug, Clone, Copy)]
struct KeyRefused;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Self::authenticate(parts, app).await;
        if caller.is_err() {
            parts.extensions.insert(KeyRefused);
        }
        caller
    }
}

impl Caller {
    async fn authenticate(parts: &Parts, app: &AppState) -> Result<Self, ApiError> {
        // Which of two keys the caller meant is a guess, and the wrong one could act with
        // another key's scope and limits.
        let given = |name: &str| parts.headers.get_all(name).iter().count();
        if given("authorization") > 1 || given("x-pica-secret") > 1 {
            return Err(ApiError::Unauthorized(
                "the API key is given more than once: send one `Authorization` header".into(),
            ));
        }
        // Pica's clients send the key as `x-pica-secret`; accept it as an alias.
        let presented = match (
            parts.headers.get(axum::http::header::AUTHORIZATION),
            parts.headers.get("x-pica-secret"),
        ) {
            (Some(header), alias) => {
                let token = bearer_token(header).ok_or_else(|| {
                    ApiError::Unauthorized(
                        "the Authorization header must be `Bearer sk_…` (the API key as a bearer token)"
                            .into(),
                    )
                })?;
                if alias.is_some_and(|alias| alias.as_bytes() != token.trim().as_bytes()) {
                    return Err(ApiError::Unauthorized(
                        "`Authorization` and `x-pica-secret` name two different API keys: send one".into(),
                    ));
                }
                Some(token)
            }
            (None, Some(header)) => header.to_str().ok(),
            (None, None) => {
                return Err(ApiError::Unauthorized(
                    "missing API key: send `Authorization: Bearer sk_…`".into(),
                ));
            }
        };
        let presented = presented
            .map(str::trim)
            .filter(|k| k.starts_with("sk_test_") || k.starts_with("sk_live_"))
            .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))?
            .to_owned();
        let key = lookup_api_key(app, presented)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))?;
        still_usable(key).map(Self)
    }
}

/// `key`, unless it is revoked or expired (the error a caller presenting it gets).
fn still_usable(key: ApiKey) -> Result<ApiKey, ApiError> {
    if key.revoked_at.is_some() {
        return Err(ApiError::ApiKeyRevoked { prefix: key.prefix });
    }
    if key.expires_at.is_some_and(|at| at <= crate::vault::now()) {
        return Err(ApiError::ApiKeyExpired { prefix: key.prefix });
    }
    Ok(key)
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's name is
/// case-insensitive (RFC 9110 §11.1).
pub(super) fn bearer_token(header: &axum::http::HeaderValue) -> Option<&str> {
    let value = header.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// The API key a request presents (as `Authorization: Bearer` or `x-pica-secret`), unchecked.
pub(super) fn presented_key(headers: &axum::http::HeaderMap) -> Option<String> {
    match headers.get(axum::http::header::AUTHORIZATION) {
        Some(header) => bearer_token(header),
        None => headers.get("x-pica-secret").and_then(|v| v.to_str().ok()),
    }
    .map(|key| key.trim().to_owned())
}

/// Whether the API key `presented` is still one calls may use: not revoked, not expired.
pub(super) async fn key_still_valid(app: &AppState, presented: String) -> bool {
    match lookup_api_key(app, presented).await {
        Ok(Some(key)) => still_usable(key).is_ok(),
        Ok(None) => false,
        // The database could not say: the key was valid when the stream opened.
        Err(_) => true,
    }
}

/// The API key `presented`, from memory while no key changed, else from the vault.
async fn lookup_api_key(app: &AppState, presented: String) -> anyhow::Result<Option<ApiKey>> {
    let generation = app.vault.current_generation()?;
    let hash = crate::vault::crypto::api_key_hash(&presented);
    if let Some(key) = app.vault.cache().api_key(generation, &hash) {
        return Ok(Some(key));
    }
    let found = app.vault.run(move |vault| vault.find_api_key(&presented)).await?;
    if let Some(key) = &found {
        app.vault.cache().remember_api_key(generation, hash, key.clone());
    }
    Ok(found)
}
