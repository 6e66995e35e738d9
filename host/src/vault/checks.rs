//! Checks on what a connection is created or changed with, shared by every way in (the vault
//! API, the connect page and `sluice connections add`) so that each refuses the same values for
//! the same reasons.
//!
//! Messages are for people. Each function takes `field`, the caller's own name for the value
//! (`` `baseUrl` `` in the API, `--base-url` on the command line), and starts its message with it.

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

/// A connection's base URL. It receives the credential, so it must be `https` unless
/// `plain_http_allowed` (a gateway that may reach private upstreams: local development, where
/// plain `http` on loopback is the norm).
pub fn parse_base_url(field: &str, raw: &str, plain_http_allowed: bool) -> Result<Url, String> {
    let parsed = Url::parse(raw).map_err(|e| format!("{field} is not a URL: {e}"))?;
    let scheme_allowed = parsed.scheme() == "https" || (parsed.scheme() == "http" && plain_http_allowed);
    if !scheme_allowed || parsed.host().is_none() {
        return Err(format!(
            "{field} must be an https URL with a host: the connection's credential is sent to it"
        ));
    }
    Ok(parsed)
}

/// A secret the host can send: not blank, at most [`MAX_SECRET_BYTES`], and free of control
/// characters. The credential goes into an HTTP header (`Authorization`, or the connector's
/// own), where a line break or NUL is not allowed: stored anyway, every later call would fail
/// with a `connector_error` that says nothing about the secret.
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
        let error = check_secret("`secret`", "token\n").expect_err("newline");
        assert!(error.contains("(\\n) at character 6"), "{error}");
        assert!(check_secret("--secret", " \t ").is_err(), "blank");
        assert!(check_secret("--secret", &"x".repeat(MAX_SECRET_BYTES + 1)).is_err());
    }

    #[test]
    fn the_auth_scheme_decides_what_secret_fits() {
        assert!(check_secret_for("echo", &AuthScheme::None, "--secret", "x").is_err());
        assert!(check_secret_for("jira", &AuthScheme::Basic, "--secret", "alice").is_err());
        assert!(check_secret_for("jira", &AuthScheme::Basic, "--secret", "alice:pw").is_ok());
        assert!(check_secret_for("github", &AuthScheme::Bearer, "--secret", "ghp_x").is_ok());
        assert!(check_secret_for("github", &AuthScheme::Bearer, "--secret", "ghp_x\n").is_err());
    }

    #[test]
    fn base_urls_must_be_https_unless_private_upstreams_are_allowed() {
        assert!(parse_base_url("--base-url", "https://ghe.acme.corp/api/v3", false).is_ok());
        assert!(parse_base_url("--base-url", "http://127.0.0.1:9000", false).is_err());
        assert!(parse_base_url("--base-url", "http://127.0.0.1:9000", true).is_ok());
        assert!(parse_base_url("--base-url", "ftp://files.acme.corp", true).is_err());
        let error = parse_base_url("--base-url", "not a url", true).expect_err("not a URL");
        assert!(error.starts_with("--base-url is not a URL"), "{error}");
        assert!(check_identity_type("--identity-type", "team").is_ok());
        assert!(check_identity_type("--identity-type", "Team").is_err());
    }
}
