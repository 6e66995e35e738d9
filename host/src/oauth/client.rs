//! The token endpoint (RFC 6749 §4.1.3 and §6): exchange an authorization code, refresh an
//! access token. Requests go through the same transport and address policy as connector
//! traffic; client credentials are sent in the form body (`client_secret_post`), which every
//! major provider accepts.

use super::OAuthClient;
use crate::egress::{self, AddressPolicy};
use crate::upstream::{Upstream, UpstreamError, UpstreamRequest};
use crate::vault::connections::TokenSet;
use serde::Deserialize;
use std::time::Duration;

/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 << 10;

/// How a token request ended, when it did not produce tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The provider refused the grant (`invalid_grant`, `invalid_client`, …): retrying will
    /// not help; the user must connect again (or the operator fix the app).
    #[error("the provider refused the grant: {0}")]
    Rejected(String),
    /// The provider could not be reached, timed out or failed (5xx): worth retrying later.
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
    /// The gateway may not send to the token endpoint (not https, an address its policy does
    /// not permit): the operator's configuration, which retrying does not change.
    #[error("the token endpoint may not be used: {0}")]
    NotPermitted(String),
    /// The provider answered 2xx with something that is not a token response.
    #[error("the token endpoint answered with a malformed token response: {0}")]
    Malformed(String),
}

/// The fields of a successful token response that Sluice uses.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// An error response (RFC 6749 §5.2).
#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Sends token requests for one gateway.
#[derive(Clone)]
pub struct TokenEndpoint {
    upstream: std::sync::Arc<dyn Upstream>,
    policy: AddressPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TokenEndpoint {
    /// Token requests through `upstream`, with `policy` applied to IP-literal URLs (names are
    /// checked by the transport's resolver) and `timeout` per request.
    pub fn new(upstream: std::sync::Arc<dyn Upstream>, policy: AddressPolicy, timeout: Duration) -> Self {
        Self {
            upstream,
            policy,
            timeout,
        }
    }

    /// The longest one token request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Exchange an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        client: &OAuthClient,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<TokenSet, TokenError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier)
            .append_pair("client_id", &client.client_id)
            .append_pair("client_secret", &client.client_secret)
            .finish();
        self.request(client, form, None).await
    }

    /// Use `refresh_token` for a new access token. A provider that does not rotate refresh
    /// tokens omits one from the answer: the old one stays.
    pub async fn refresh(&self, client: &OAuthClient, refresh_token: &str) -> Result<TokenSet, TokenError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", refresh_token)
            .append_pair("client_id", &client.client_id)
            .append_pair("client_secret", &client.client_secret)
            .finish();
        self.request(client, form, Some(refresh_token)).await
    }

    async fn request(
        &self,
        client: &OAuthClient,
        form: String,
        previous_refresh_token: Option<&str>,
    ) -> Result<TokenSet, TokenError> {
        let url = client.token_url.clone();
        let plain_http_allowed = self.policy == AddressPolicy::AllowPrivate;
        if url.scheme() != "https" && !(url.scheme() == "http" && plain_http_allowed) {
            return Err(TokenError::NotPermitted(format!(
                "it must use https, not `{}`",
                url.scheme()
            )));
        }
        if let Some(ip) = egress::ip_literal(&url)
            && !self.policy.permits(ip)
        {
            return Err(TokenError::NotPermitted("its address is not permitted".into()));
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let request = UpstreamRequest {
            method: http::Method::POST,
            url,
            headers,
            body: Some(form.into()),
            timeout: self.timeout,
            max_response_bytes: MAX_TOKEN_RESPONSE,
        };
        let response = self.upstream.send(request).await.map_err(|error| match error {
            UpstreamError::Timeout(_) => TokenError::Unavailable("no answer in time".into()),
            UpstreamError::TooLarge(_) => TokenError::Malformed("the response is too large".into()),
            UpstreamError::Unusable(reason) => TokenError::Malformed(reason),
            UpstreamError::Denied(reason) => TokenError::NotPermitted(reason),
            UpstreamError::Transport(reason) => TokenError::Unavailable(reason),
        })?;
        parse_response(
            response.status,
            &response.body,
            previous_refresh_token,
            crate::vault::now(),
        )
    }
}

/// Turn a token endpoint's answer into tokens or a classified failure. Provider error texts
/// are passed on (they never contain the tokens); bodies of malformed answers are not.
fn parse_response(
    status: u16,
    body: &[u8],
    previous_refresh_token: Option<&str>,
    now: i64,
) -> Result<TokenSet, TokenError> {
    if (200..300).contains(&status) {
        let parsed: TokenResponse = serde_json::from_slice(body)
            .map_err(|_| TokenError::Malformed(format!("HTTP {status} without an `access_token` in JSON")))?;
        if parsed.access_token.is_empty() {
            return Err(TokenError::Malformed("an empty `access_token`".into()));
        }
        if let Some(kind) = &parsed.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(TokenError::Malformed(format!("unsupported token_type `{kind}`")));
        }
        // Some providers send `expires_in` as a string.
        let expires_in = match &parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        return Ok(TokenSet {
            access_token: parsed.access_token,
            refresh_token: parsed
                .refresh_token
                .filter(|t| !t.is_empty())
                .or_else(|| previous_refresh_token.map(str::to_owned)),
            expires_at: expires_in.filter(|s| *s > 0).map(|s| now + s),
            scope: parsed.scope,
            refresh_refused: None,
        });
    }
    if status >= 500 || status == 429 {
        return Err(TokenError::Unavailable(format!("HTTP {status}")));
    }
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(error) => {
            let description = error
                .error_description
                .map(|d| format!(" ({})", d.chars().take(200).collect::<String>()))
                .unwrap_or_default();
            Err(TokenError::Rejected(format!("{}{description}", error.error)))
        }
        Err(_) => Err(TokenError::Rejected(format!("HTTP {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport that fails every request the same way, without touching the network.
    struct Failing(UpstreamError);

    impl Upstream for Failing {
        fn send(
            &self,
            _request: UpstreamRequest,
        ) -> futures::future::BoxFuture<'_, Result<crate::upstream::UpstreamResponse, UpstreamError>>
        {
            let error = self.0.clone();
            Box::pin(async move { Err(error) })
        }
    }

    fn client(token_url: &str) -> OAuthClient {
        OAuthClient {
            authorize_url: url::Url::parse("https://accounts.example.com/auth").expect("url"),
            token_url: url::Url::parse(token_url).expect("url"),
            client_id: "id".into(),
            client_secret: "secret".into(),
            scopes: Vec::new(),
            authorize_params: Vec::new(),
            redirect_url: None,
        }
    }

    #[tokio::test]
    async fn transport_failures_and_forbidden_endpoints_are_unavailable_not_rejected() {
        let endpoint = |error: UpstreamError, policy| {
            TokenEndpoint::new(
                std::sync::Arc::new(Failing(error)),
                policy,
                Duration::from_secs(1),
            )
        };
        let timeout = endpoint(
            UpstreamError::Timeout(Duration::from_secs(1)),
            AddressPolicy::PublicOnly,
        );
        assert_eq!(
            timeout
                .refresh(&client("https://oauth.example.com/token"), "rt")
                .await
                .err(),
            Some(TokenError::Unavailable("no answer in time".into()))
        );
        let refused = endpoint(
            UpstreamError::Transport("connection refused".into()),
            AddressPolicy::PublicOnly,
        );
        assert!(matches!(
            refused
                .refresh(&client("https://oauth.example.com/token"), "rt")
                .await,
            Err(TokenError::Unavailable(_))
        ));
        // Checked before anything is sent: plain http and private IP literals.
        let strict = endpoint(
            UpstreamError::Transport("must not be reached".into()),
            AddressPolicy::PublicOnly,
        );
        for url in [
            "http://oauth.example.com/token",
            "https://10.0.0.8/token",
            "https://169.254.169.254/token",
        ] {
            let outcome = strict.refresh(&client(url), "rt").await;
            assert!(
                matches!(&outcome, Err(TokenError::NotPermitted(m)) if !m.contains("must not be reached")),
                "{url}: {outcome:?}"
            );
        }
    }

    #[test]
    fn successful_answers_become_token_sets() {
        let body = br#"{"access_token":"at-1","token_type":"Bearer","expires_in":3599,"refresh_token":"rt-2","scope":"a b"}"#;
        let tokens = parse_response(200, body, Some("rt-1"), 1_000).expect("tokens");
        assert_eq!(tokens.access_token, "at-1");
        assert_eq!(
            tokens.refresh_token.as_deref(),
            Some("rt-2"),
            "a rotated token wins"
        );
        assert_eq!(tokens.expires_at, Some(4_599));
        assert_eq!(tokens.scope.as_deref(), Some("a b"));

        let kept = parse_response(
            200,
            br#"{"access_token":"at","expires_in":"60"}"#,
            Some("rt-1"),
            0,
        )
        .expect("tokens");
        assert_eq!(
            kept.refresh_token.as_deref(),
            Some("rt-1"),
            "no rotation keeps the old one"
        );
        assert_eq!(kept.expires_at, Some(60), "string expires_in is read");
    }

    #[test]
    fn every_failure_is_classified() {
        assert_eq!(
            parse_response(
                400,
                br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
                None,
                0
            )
            .err(),
            Some(TokenError::Rejected(
                "invalid_grant (Token has been expired or revoked.)".into()
            ))
        );
        assert_eq!(
            parse_response(401, b"<html>nope</html>", None, 0).err(),
            Some(TokenError::Rejected("HTTP 401".into()))
        );
        assert_eq!(
            parse_response(503, b"down", None, 0).err(),
            Some(TokenError::Unavailable("HTTP 503".into()))
        );
        assert!(matches!(
            parse_response(200, b"access_token=at&expires_in=5", None, 0),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(200, br#"{"access_token":""}"#, None, 0),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(200, br#"{"access_token":"x","token_type":"mac"}"#, None, 0),
            Err(TokenError::Malformed(_))
        ));
    }
}
