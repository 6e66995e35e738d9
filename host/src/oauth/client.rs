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
    /// The provider refused the grant itself (`invalid_grant`, or a provider's own spelling
    /// of it): the user must connect again, and a refused refresh token is never sent again.
    #[error("the provider refused the grant: {0}")]
    Rejected(String),
    /// The provider refused the request for another reason (`invalid_request`,
    /// `invalid_scope`, a code of its own): a code exchange fails, while stored tokens are
    /// kept, as nothing says the grant is gone.
    #[error("the provider refused the token request: {0}")]
    Refused(String),
    /// The provider could not be reached, timed out or failed (5xx): worth retrying later.
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint may not be used as configured: the gateway may not send there (not
    /// https, an address its policy does not permit), or the provider refuses the gateway's
    /// OAuth app (`invalid_client`, `unauthorized_client`, `unsupported_grant_type`). The
    /// operator's configuration, which retrying does not change, and no user's fault: stored
    /// tokens are kept.
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
        let Ok(parsed) = serde_json::from_slice::<TokenResponse>(body) else {
            // GitHub and Slack refuse with a 2xx and an error object.
            return Err(match serde_json::from_slice::<ErrorResponse>(body) {
                Ok(error) => refusal(error),
                Err(_) => TokenError::Malformed(format!("HTTP {status} without an `access_token` in JSON")),
            });
        };
        return token_set(parsed, previous_refresh_token, now);
    }
    if status >= 500 || status == 429 {
        return Err(TokenError::Unavailable(format!("HTTP {status}")));
    }
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(error) => Err(refusal(error)),
        // Not the provider's OAuth answer (a proxy's or firewall's page, a wrong token URL, a
        // redirect to a maintenance page): nothing says the grant is gone.
        Err(_) => Err(TokenError::Unavailable(format!(
            "HTTP {status} without an OAuth error"
        ))),
    }
}

/// Longest token lifetime taken as given (ten years): past it, `expires_in` is nonsense.
const MAX_EXPIRES_IN: i64 = 10 * 365 * 86_400;

/// The tokens of a successful answer.
fn token_set(
    parsed: TokenResponse,
    previous_refresh_token: Option<&str>,
    now: i64,
) -> Result<TokenSet, TokenError> {
    if parsed.access_token.is_empty() {
        return Err(TokenError::Malformed("an empty `access_token`".into()));
    }
    // Types that need more than the token in a header (a signature, a proof per request).
    // Others go as bearer tokens, as providers that name their own (Slack's `bot`) mean.
    if let Some(kind) = &parsed.token_type
        && ["mac", "dpop", "pop"]
            .iter()
            .any(|needs_more| kind.eq_ignore_ascii_case(needs_more))
    {
        return Err(TokenError::Malformed(format!("unsupported token_type `{kind}`")));
    }
    // Some providers send `expires_in` as a string, or with a fraction.
    let seconds = |number: f64| number.is_finite().then_some(number as i64);
    let expires_in = match &parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().and_then(seconds)),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse()
            .ok()
            .or_else(|| s.trim().parse().ok().and_then(seconds)),
        _ => None,
    };
    Ok(TokenSet {
        access_token: parsed.access_token,
        refresh_token: parsed
            .refresh_token
            .filter(|t| !t.is_empty())
            .or_else(|| previous_refresh_token.map(str::to_owned)),
        expires_at: expires_in
            .filter(|s| *s > 0)
            .map(|s| now.saturating_add(s.min(MAX_EXPIRES_IN))),
        scope: parsed.scope,
        refresh_refused: None,
    })
}

/// A provider's error answer (RFC 6749 §5.2) as what it means for the grant.
fn refusal(error: ErrorResponse) -> TokenError {
    let description = error
        .error_description
        .map(|d| format!(" ({})", d.chars().take(200).collect::<String>()))
        .unwrap_or_default();
    let text = format!(
        "{}{description}",
        error.error.chars().take(100).collect::<String>()
    );
    match error.error.as_str() {
        // The standard code, and GitHub's and Slack's for a dead refresh token.
        "invalid_grant" | "bad_refresh_token" | "invalid_refresh_token" | "token_revoked" => {
            TokenError::Rejected(text)
        }
        "invalid_client" | "unauthorized_client" | "unsupported_grant_type" => {
            TokenError::NotPermitted(format!("the provider refuses the gateway's OAuth app: {text}"))
        }
        _ => TokenError::Refused(text),
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
        // Only a refused grant is the user's to fix; the app's refusal is the operator's, and
        // an answer that is no OAuth error says nothing about the grant.
        assert!(matches!(
            parse_response(401, br#"{"error":"invalid_client"}"#, None, 0),
            Err(TokenError::NotPermitted(why)) if why.contains("invalid_client")
        ));
        assert_eq!(
            parse_response(400, br#"{"error":"invalid_scope"}"#, None, 0).err(),
            Some(TokenError::Refused("invalid_scope".into()))
        );
        for status in [302, 401, 403, 404, 408] {
            assert!(
                matches!(
                    parse_response(status, b"<html>nope</html>", None, 0),
                    Err(TokenError::Unavailable(_))
                ),
                "{status}"
            );
        }
        // GitHub and Slack refuse with a 200.
        assert!(matches!(
            parse_response(200, br#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}"#, None, 0),
            Err(TokenError::Rejected(_))
        ));
        assert!(matches!(
            parse_response(200, br#"{"ok":false,"error":"invalid_refresh_token"}"#, None, 0),
            Err(TokenError::Rejected(_))
        ));
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

    #[test]
    fn token_types_and_lifetimes_providers_really_send_are_read() {
        let slack = parse_response(200, br#"{"access_token":"xoxb-1","token_type":"bot"}"#, None, 0);
        assert_eq!(slack.map(|t| t.access_token).ok().as_deref(), Some("xoxb-1"));
        let expiry = |body: &[u8]| {
            parse_response(200, body, None, 1_000)
                .ok()
                .and_then(|t| t.expires_at)
        };
        assert_eq!(
            expiry(br#"{"access_token":"a","expires_in":3599.5}"#),
            Some(4_599)
        );
        assert_eq!(
            expiry(br#"{"access_token":"a","expires_in":" 60 "}"#),
            Some(1_060)
        );
        assert_eq!(
            expiry(br#"{"access_token":"a","expires_in":9223372036854775807}"#),
            Some(1_000 + MAX_EXPIRES_IN),
            "no overflow"
        );
        assert_eq!(expiry(br#"{"access_token":"a","expires_in":-5}"#), None);
    }
}
