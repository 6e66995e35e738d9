//! The connect pages: small, server-rendered HTML with no scripts.
//!
//! Every page carries headers that keep it safe to show a URL with a session token in it:
//! no caching, no referrer (the token must not leak to the provider), no framing, and a CSP
//! that allows nothing but the inline stylesheet and forms posting back here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escape text for HTML element content and quoted attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f5f6f8;color:#1d2330;margin:0}\
main{max-width:26rem;margin:10vh auto;background:#fff;border-radius:12px;padding:2rem;\
box-shadow:0 2px 12px rgba(0,0,0,.08)}h1{font-size:1.35rem;margin:0 0 .75rem}\
p{line-height:1.5}label{display:block;margin:1rem 0 .3rem;font-weight:600}\
input{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #c8ccd4;border-radius:6px;font-size:1rem}\
.button{display:inline-block;margin-top:1.25rem;padding:.7rem 1.2rem;background:#2459e0;color:#fff;\
border:0;border-radius:6px;font-size:1rem;text-decoration:none;cursor:pointer}\
.note{color:#5b6272;font-size:.9rem}.ok{color:#157347}.bad{color:#b42318}";

/// A complete page with `title` and already-escaped `body` HTML.
pub(super) fn render(status: StatusCode, title: &str, body: &str) -> Response {
    render_with_form_target(status, title, body, None)
}

/// The same, for a page whose form, once posted, may send the browser on to `form_target` (an
/// origin): browsers hold a post's redirects to the page's `form-action` too.
fn render_with_form_target(
    status: StatusCode,
    title: &str,
    body: &str,
    form_target: Option<&str>,
) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        title = escape(title),
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(headers, header::CACHE_CONTROL, "no-store");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    let policy = form_target
        .map(|origin| POLICY.replace("form-action 'self'", &format!("form-action 'self' {origin}")))
        .and_then(|policy| HeaderValue::from_str(&policy).ok())
        // Without the return origin, the post's redirect stops in the browser: never no policy.
        .unwrap_or(HeaderValue::from_static(POLICY));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    response
}

/// A `303 See Other` to `target` (the app's page the user returns to), with the pages' caching
/// and referrer rules.
pub(super) fn redirect(target: &url::Url) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(target.as_str()) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// A page that only says something: `title` and a paragraph of plain `text`.
pub(super) fn message(status: StatusCode, title: &str, text: &str, good: bool) -> Response {
    let class = if good { "ok" } else { "bad" };
    render(
        status,
        title,
        &format!(
            "<h1 class=\"{class}\">{}</h1><p>{}</p>",
            escape(title),
            escape(text)
        ),
    )
}

/// A page that says something bad happened, with a link back to the app's page `return_to`
/// when the app named one (the link shows where it goes).
pub(super) fn message_with_return(
    status: StatusCode,
    title: &str,
    text: &str,
    return_to: Option<&url::Url>,
) -> Response {
    let Some(return_to) = return_to else {
        return message(status, title, text, false);
    };
    let host = return_to.host_str().unwrap_or_default();
    render(
        status,
        title,
        &format!(
            "<h1 class=\"bad\">{}</h1><p>{}</p><a class=\"button\" id=\"return\" href=\"{}\">Back to {}</a>",
            escape(title),
            escape(text),
            escape(return_to.as_str()),
            escape(host)
        ),
    )
}

/// The page that starts an OAuth flow: one link to the authorize step. `api_origin` (scheme, host, port) is where
/// the tokens will be used.
pub(super) fn oauth_start(integration_name: &str, api_origin: &str, authorize_path: &str) -> Response {
    let name = escape(integration_name);
    render(
        StatusCode::OK,
        &format!("Connect {integration_name}"),
        &format!(
            "<h1>Connect {name}</h1>\
             <p>You will sign in with {name} and approve access. Sluice stores the tokens \
             encrypted and uses them only with <b id=\"destination\">{host}</b>; the application \
             never sees them.</p>\
             <a class=\"button\" id=\"continue\" href=\"{}\">Continue to {name}</a>",
            escape(authorize_path),
            host = escape(api_origin),
        ),
    )
}

/// One input of the credentials form.
pub(super) struct Field {
    /// Form field name.
    pub name: &'static str,
    /// Label shown.
    pub label: String,
    /// Whether to mask the input.
    pub secret: bool,
}

/// Where a form posts and what it carries.
pub(super) struct FormTarget<'a> {
    /// The path it posts to.
    pub action: &'a str,
    /// Its anti-forgery token.
    pub csrf: &'a str,
    /// The origin of the app's page the post may redirect to, if the session has one.
    pub return_origin: Option<&'a str>,
}

/// The form for API-key and basic-auth integrations. `api_origin` (scheme, host, port) is where the credentials will
/// be sent.
pub(super) fn credentials_form(
    integration_name: &str,
    api_origin: &str,
    target: &FormTarget<'_>,
    fields: &[Field],
) -> Response {
    let name = escape(integration_name);
    let mut inputs = String::new();
    for field in fields {
        let kind = if field.secret { "password" } else { "text" };
        inputs.push_str(&format!(
            "<label for=\"{n}\">{label}</label>\
             <input id=\"{n}\" name=\"{n}\" type=\"{kind}\" required autocomplete=\"off\" maxlength=\"16384\">",
            n = field.name,
            label = escape(&field.label),
        ));
    }
    let mut response = render_with_form_target(
        StatusCode::OK,
        &format!("Connect {integration_name}"),
        &format!(
            "<h1>Connect {name}</h1>\
             <p>Enter your {name} credentials. They are stored encrypted and sent only to \
             <b id=\"destination\">{host}</b>; the application never sees them.</p>\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{inputs}\
             <button class=\"button\" id=\"save\" type=\"submit\">Connect</button></form>",
            action = escape(target.action),
            csrf = escape(target.csrf),
            host = escape(api_origin),
        ),
        target.return_origin,
    );
    // With `no-referrer`, browsers send `Origin: null` with the form's own post, and one
    // without fetch metadata could not be told from a forged post. The page's address (with
    // its token) still goes nowhere but to the gateway itself.
    response
        .headers_mut()
        .insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_break_out_of_content_or_attributes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn pages_forbid_scripts_framing_caching_and_referrers() {
        let response = message(StatusCode::OK, "Done", "<b>hi</b>", true);
        let headers = response.headers();
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().expect("csp");
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    }
}
