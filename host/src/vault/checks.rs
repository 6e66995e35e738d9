//! Checks on what a connection is created or changed with, shared by every way in (the vault
//! API, the connect page and `sluice connections add`) so that each refuses the same values for
//! the same reasons.
//!
//! Messages are for people. Each function takes `field`, the caller's own name for the value
//! (`` `baseUrl` `` in the API, `--base-url` on the command line), and starts its message with it.

use crate::egress::AddressPolicy;
use crate::runtime::manifest::AuthScheme;
use url::Url;

/// Identity kinds the vault accepts.
pub const IDENTITY_TYPES: &[&str] = &["user", "team", "organization", "project"];

/// Longest secret stored.
pub const MAX_SECRET_BYTES: usize = 16 << 10;

/// `kind` must be one of [`IDENTITY_TYPES`].
pub fn check_identity_type(field: &str, kind: &str) -> Result<(), String> {
    if IDENTITY_TYPES.contains(&kind) {
        Ok(())
    } else {
        Err(format!(
            "{field} must be one of {}, not `{kind}`",
            IDENTITY_TYPES.join(", ")
        ))
    }
}

/// An OAuth scope the operator adds to a connector's: one scope token of RFC 6749 (3.3),
/// printable ASCII without spaces, `"` or `\`. Scopes are sent space-separated, so `a b` would
/// ask for two, and an empty one for a malformed list.
pub fn check_oauth_scope(field: &str, scope: &str) -> Result<(), String> {
    let token_char = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    if scope.is_empty() || !scope.bytes().all(token_char) {
        return Err(format!(
            "{field} `{}` is not one OAuth scope: printable ASCII without spaces, `\"` or `\\`",
            scope.escape_default()
        ));
    }
    Ok(())
}

/// Longest identity, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 200;

/// An identity (whose connection it is): 1 to [`MAX_IDENTITY_BYTES`] bytes without control
/// characters (bidirectional formatting ones included). It becomes part of the connection key,
/// which apps store, log and print.
pub fn check_identity(field: &str, identity: &str) -> Result<(), String> {
    if identity.is_empty() || identity.len() > MAX_IDENTITY_BYTES {
        return Err(format!("{field} must be 1 to {MAX_IDENTITY_BYTES} bytes"));
    }
    if identity.trim().is_empty() {
        return Err(format!("{field} must not be blank"));
    }
    if let Some(control) = identity.chars().find(|c| c.is_control() || is_bidi_control(*c)) {
        return Err(format!(
            "{field} contains a control character ({}); an identity is part of the connection key",
            control.escape_default()
        ));
    }
    Ok(())
}

/// Unicode's bidirectional formatting characters: printed, they reorder the text around them
/// (`\u{202E}` shows what follows backwards), so an identity could read as another one.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// One of an OAuth app's URLs (authorize, token, redirect): an absolute `http`/`https` URL with
/// a host.
pub fn parse_oauth_url(field: &str, raw: &str) -> Result<Url, String> {
    match Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => Ok(url),
        _ => Err(format!(
            "{field} must be an absolute http(s) URL, not `{}`",
            raw.escape_default()
        )),
    }
}

/// An OAuth app's URL at the provider (authorize, token): as [`parse_oauth_url`], and `https`
/// unless `plain_http_allowed`, as connectors' own OAuth URLs are — the token URL receives the
/// client secret and users' refresh tokens.
pub fn parse_provider_url(field: &str, raw: &str, plain_http_allowed: bool) -> Result<Url, String> {
    let url = parse_oauth_url(field, raw)?;
    if url.scheme() == "http" && !plain_http_allowed {
        return Err(format!(
            "{field} must be https: the provider's endpoints receive the client secret and users' \
             tokens (plain http only on a gateway with --allow-private-upstreams)"
        ));
    }
    Ok(url)
}

/// The longest base URL a connection may have.
pub const MAX_BASE_URL_BYTES: usize = 2048;

/// A connection's base URL. It receives the credential, so it must be `https` unless
/// `plain_http_allowed` (a gateway that may reach private upstreams: local development, where
/// plain `http` on loopback is the norm).
pub fn parse_base_url(field: &str, raw: &str, plain_http_allowed: bool) -> Result<Url, String> {
    // It is stored, shown and cached with every connection: a URL's worth, not megabytes.
    if raw.len() > MAX_BASE_URL_BYTES {
        return Err(format!("{field} is longer than {MAX_BASE_URL_BYTES} bytes"));
    }
    let parsed = Url::parse(raw).map_err(|e| format!("{field} is not a URL: {e}"))?;
    let scheme_allowed = parsed.scheme() == "https" || (parsed.scheme() == "http" && plain_http_allowed);
    if !scheme_allowed || parsed.host().is_none() {
        let schemes = if plain_http_allowed {
            "an http or https"
        } else {
            "an https"
        };
        return Err(format!(
            "{field} must be {schemes} URL with a host: the connection's credential is sent to it"
        ));
    }
    // Connectors' paths are joined to it: a query or fragment would swallow them.
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "{field} must not have a query or fragment: connectors' request paths are appended to it"
        ));
    }
    // The base URL is shown wherever the connection is (API views, listings, the connect
    // page), so it must hold no credential of its own.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{field} must not contain a user name or password: store the credential as the \
             connection's secret"
        ));
    }
    // An address every call would be refused (a cloud metadata address, or a private one on a
    // gateway that reaches none): refused now, not on each call. Names are checked when dialled.
    let policy = match plain_http_allowed {
        true => AddressPolicy::AllowPrivate,
        false => AddressPolicy::PublicOnly,
    };
    if let Some(ip) = crate::egress::ip_literal(&parsed)
        && let Some(reason) = policy.refusal(ip)
    {
        return Err(format!("{field} names {ip}, which no call could reach: {reason}"));
    }
    Ok(parsed)
}

/// A secret the host can send and scrub: not blank, at least
/// [`crate::runtime::SHORTEST_SCRUBBED`] bytes, at most [`MAX_SECRET_BYTES`], and free of
/// control characters. The credential goes into an HTTP header (`Authorization`, or the
/// connector's own), where a line break or NUL is not allowed: stored anyway, every later call
/// would fail with a `connector_error` that says nothing about the secret. A shorter one could
/// not be told apart from ordinary text, so an upstream echoing it would not have it redacted.
pub fn check_secret(field: &str, secret: &str) -> Result<(), String> {
    if secret.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if secret.len() > MAX_SECRET_BYTES {
        return Err(format!("{field} is longer than {} KiB", MAX_SECRET_BYTES >> 10));
    }
    // `is_control` covers C0 (tab and line breaks included), DEL and C1: none is allowed in a
    // header value.
    if let Some((position, control)) = secret.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "{field} contains a control character ({}) at character {}: a credential is sent in an \
             HTTP header, which cannot carry one. Remove it (a trailing newline is often copied \
             along with a token)",
            control.escape_default(),
            position + 1
        ));
    }
    let shortest = crate::runtime::SHORTEST_SCRUBBED;
    if secret.chars().count() < shortest {
        return Err(format!(
            "{field} is shorter than {shortest} characters: too short to be a credential, and to \
             be told apart from other text when it is scrubbed from upstream responses"
        ));
    }
    Ok(())
}

/// [`check_secret`], and that integration `platform`, which authenticates with `auth`, takes a
/// stored secret of this form: not at all for `none`, `user:password` for basic auth.
pub fn check_secret_for(platform: &str, auth: &AuthScheme, field: &str, secret: &str) -> Result<(), String> {
    if !auth.needs_connection() {
        return Err(format!(
            "`{platform}` needs no credentials: call it without a connection"
        ));
    }
    check_secret(field, secret)?;
    if *auth == AuthScheme::Basic && !secret.contains(':') {
        return Err(format!(
            "`{platform}` uses basic auth: {field} must be `user:password`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_with_control_characters_are_refused() {
        assert!(check_secret("--secret", "ghp_token").is_ok());
        assert!(check_secret("--secret", "user:pässwörd with spaces").is_ok());
        for bad in [
            "ghp_token\n",
            "ghp\r\ntoken",
            "ghp\0token",
            "\tghp_token",
            "ghp\u{1b}[0m",
            "ghp\u{7f}",
            "ghp\u{85}",
        ] {
            let error = check_secret("--secret", bad).expect_err(bad);
            assert!(
                error.starts_with("--secret contains a control character"),
                "{error}"
            );
        }
        let error = check_secret("`secret`", "abcd").expect_err("short");
        assert!(error.contains("shorter than 6 characters"), "{error}");
        let error = check_secret("`secret`", "token\n").expect_err("newline");
        assert!(error.contains("(\\n) at character 6"), "{error}");
        assert!(check_secret("--secret", " \t ").is_err(), "blank");
        assert!(check_secret("--secret", &"x".repeat(MAX_SECRET_BYTES + 1)).is_err());
    }

    #[test]
    fn identities_are_short_printable_text() {
        assert!(check_identity("--identity", "alice@acme.com").is_ok());
        assert!(check_identity("--identity", "équipe 7").is_ok());
        assert!(check_identity("--identity", &"a".repeat(MAX_IDENTITY_BYTES)).is_ok());
        assert!(
            check_identity("--identity", "عربي user").is_ok(),
            "right-to-left text itself is fine"
        );
        for bad in [
            "",
            "   ",
            "tab\there",
            "line\nbreak",
            "esc\u{1b}[31m",
            "\u{202e}evil",
            "a\u{2067}b",
        ] {
            assert!(check_identity("--identity", bad).is_err(), "{bad:?}");
        }
        assert!(check_identity("--identity", &"a".repeat(MAX_IDENTITY_BYTES + 1)).is_err());
    }

    #[test]
    fn oauth_scopes_are_single_tokens() {
        for good in [
            "https://www.googleapis.com/auth/gmail.readonly",
            "repo",
            "offline_access",
        ] {
            assert!(check_oauth_scope("--scope", good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "quote\"", "back\\slash", "tab\t", "ünï"] {
            assert!(check_oauth_scope("--scope", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_auth_scheme_decides_what_secret_fits() {
        assert!(check_secret_for("echo", &AuthScheme::None, "--secret", "x").is_err());
        assert!(check_secret_for("jira", &AuthScheme::Basic, "--secret", "alice").is_err());
        assert!(check_secret_for("jira", &AuthScheme::Basic, "--secret", "alice:pw").is_ok());
        assert!(check_secret_for("github", &AuthScheme::Bearer, "--secret", "ghp_x12345").is_ok());
        assert!(check_secret_for("github", &AuthScheme::Bearer, "--secret", "ghp_x\n").is_err());
    }

    #[test]
    fn provider_urls_must_be_https_unless_private_upstreams_are_allowed() {
        let token = "http://127.0.0.1:9000/token";
        assert!(parse_provider_url("tokenUrl", token, true).is_ok());
        let refused = parse_provider_url("tokenUrl", token, false).expect_err("plain http");
        assert!(refused.starts_with("tokenUrl must be https"), "{refused}");
        assert!(parse_provider_url("tokenUrl", "https://oauth2.example.com/token", false).is_ok());
    }

    #[test]
    fn base_urls_must_be_https_unless_private_upstreams_are_allowed() {
        assert!(parse_base_url("--base-url", "https://ghe.acme.corp/api/v3", false).is_ok());
        assert!(parse_base_url("--base-url", "http://127.0.0.1:9000", false).is_err());
        assert!(parse_base_url("--base-url", "http://127.0.0.1:9000", true).is_ok());
        for with_more in ["https://ghe.acme.corp/api?x=1", "https://ghe.acme.corp/api#top"] {
            let error = parse_base_url("--base-url", with_more, false).expect_err(with_more);
            assert!(error.contains("must not have a query or fragment"), "{error}");
        }
        let error = parse_base_url("--base-url", "ftp://127.0.0.1", true).expect_err("ftp");
        assert!(
            error.starts_with("--base-url must be an http or https URL"),
            "{error}"
        );
        assert!(parse_base_url("--base-url", "ftp://files.acme.corp", true).is_err());
        let error = parse_base_url("--base-url", "not a url", true).expect_err("not a URL");
        assert!(error.starts_with("--base-url is not a URL"), "{error}");
        let error =
            parse_base_url("--base-url", "https://user:pw@ghe.acme.corp", false).expect_err("userinfo");
        assert!(
            error.contains("must not contain a user name or password"),
            "{error}"
        );
        assert!(parse_base_url("--base-url", "https://token@ghe.acme.corp", false).is_err());
        // Addresses no call could reach are refused at once: metadata always, private ones
        // unless the gateway may reach them.
        for (url, private_allowed) in [
            ("http://169.254.169.254", true),
            ("https://[fd00:ec2::254]/", true),
            ("https://10.0.0.7", false),
            ("https://2130706433", false),
        ] {
            let error = parse_base_url("`baseUrl`", url, private_allowed).expect_err(url);
            assert!(error.contains("which no call could reach"), "{error}");
        }
        assert!(parse_base_url("--base-url", "https://10.0.0.7", true).is_ok());
        assert!(check_identity_type("--identity-type", "team").is_ok());
        assert!(check_identity_type("--identity-type", "Team").is_err());
    }
}
