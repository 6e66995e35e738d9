//! Upstream HTTP requests, sent by the gateway on the connector's behalf.
//!
//! URLs are either paths starting with `/`, resolved against the connection's base URL (the
//! manifest's `base_url` unless the connection overrides it, e.g. for GitHub Enterprise), or
//! absolute URLs on one of the manifest's allowed hosts. Credentials are added by the gateway:
//! never set `Authorization` yourself.
//!
//! ```no_run
//! # fn run() -> Result<(), sluice_sdk::Error> {
//! use sluice_sdk::{http, json};
//! let created = http::post("/repos/acme/webapp/issues")
//!     .header("accept", "application/vnd.github+json")
//!     .json(&json!({"title": "Bug report"}))?
//!     .send()?;
//! let issue: sluice_sdk::Value = created.json()?;
//! # Ok(()) }
//! ```

#[cfg(target_arch = "wasm32")]
use crate::bindings::sluice::connector::http::send;
// Natively (a connector's unit tests) requests go to the fake upstream of `testing::run`.
use crate::bindings::sluice::connector::types::{Header, Request};
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::send;
use crate::{Error, HttpError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Percent-encode `value` for use as one path segment, so that caller-supplied text such as
/// `../admin` or `a/b` cannot change which upstream path a request names. A value that is
/// exactly `.` or `..` stays a dot segment however it is encoded (URL parsers resolve `%2E%2E`
/// too): the host refuses such a request (`egress_denied`) rather than send it elsewhere.
///
/// ```
/// assert_eq!(sluice_sdk::http::segment("a b/../c"), "a%20b%2F..%2Fc");
/// ```
pub fn segment(value: &str) -> String {
    // Everything but RFC 3986 unreserved characters is encoded.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let encoded = percent_encoding::utf8_percent_encode(value, SEGMENT).to_string();
    // A segment that is exactly `.` or `..` would still be a dot-segment.
    match encoded.as_str() {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => encoded,
    }
}

/// Start a `GET` request.
pub fn get(url: impl Into<String>) -> RequestBuilder {
    RequestBuilder::new("GET", url)
}

/// Start a `POST` request.
pub fn post(url: impl Into<String>) -> RequestBuilder {
    RequestBuilder::new("POST", url)
}

/// Start a `PUT` request.
pub fn put(url: impl Into<String>) -> RequestBuilder {
    RequestBuilder::new("PUT", url)
}

/// Start a `PATCH` request.
pub fn patch(url: impl Into<String>) -> RequestBuilder {
    RequestBuilder::new("PATCH", url)
}

/// Start a `DELETE` request.
pub fn delete(url: impl Into<String>) -> RequestBuilder {
    RequestBuilder::new("DELETE", url)
}

/// An upstream request under construction. Finish it with [`RequestBuilder::send`].
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: String,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<Header>,
    body: Option<Vec<u8>>,
}

impl RequestBuilder {
    /// A request with any method, e.g. `HEAD`.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Append a query parameter (a string, a number, anything `Display`); name and value are
    /// percent-encoded.
    pub fn query(mut self, name: &str, value: impl ToString) -> Self {
        self.query.push((name.to_owned(), value.to_string()));
        self
    }

    /// Append a query parameter only when `value` is `Some`; takes what [`Self::query`] does.
    pub fn query_opt(self, name: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(value) => self.query(name, value),
            None => self,
        }
    }

    /// Add a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(Header {
            name: name.to_owned(),
            value: value.to_owned(),
        });
        self
    }

    /// Send `value` as a JSON body (sets `content-type: application/json`).
    pub fn json(self, value: &impl Serialize) -> Result<Self, Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::other(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Send `pairs` as an `application/x-www-form-urlencoded` body.
    pub fn form<'a>(self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body.into_bytes())
    }

    /// Set the raw request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The full URL this request will name, query included.
    pub fn url(&self) -> String {
        if self.query.is_empty() {
            return self.url.clone();
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.query)
            .finish();
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}{query}", self.url)
    }

    /// Send the request through the gateway and wait for the upstream response.
    ///
    /// Any HTTP status is a successful send; check [`Response::status`] yourself.
    ///
    /// # Panics
    ///
    /// Natively (a unit test), outside [`crate::testing::run`]: there is no gateway to send it.
    pub fn send(self) -> Result<Response, HttpError> {
        let request = Request {
            url: self.url(),
            method: self.method,
            headers: self.headers,
            body: self.body,
        };
        let response = send(&request).map_err(HttpError::from_wit)?;
        Ok(Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }
}

/// An upstream response.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<Header>,
    body: Vec<u8>,
}

impl Response {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of header `name` (case-insensitive), in the order the upstream sent them:
    /// for a header that may come more than once, such as `link`.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The target of the first web link (RFC 8288 `Link` headers, repeated ones included) whose
    /// `rel` names `rel` (case-insensitive), as the upstream wrote it: `response.link("next")`
    /// is the next page's URL of APIs that page this way (GitHub, GitLab, Shopify and many
    /// more). An absolute URL on the connection's host can be sent as it is.
    pub fn link(&self, rel: &str) -> Option<&str> {
        self.header_values("link")
            .flat_map(web_links)
            .find(|(_, rels)| {
                rels.split_ascii_whitespace()
                    .any(|name| name.eq_ignore_ascii_case(rel))
            })
            .map(|(target, _)| target)
    }

    /// The body deserialized from JSON; a body that does not fit `T` is [`Error::Upstream`]
    /// (`502 connector_error` for the caller). An upstream's error answer rarely fits the type
    /// of its success: check [`Response::is_success`] first and hand an error back as it is
    /// (`return Ok(response.into())`), so that the caller sees the upstream's own status.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::upstream(format!("response body is not the expected JSON: {e}")))
    }

    /// The body as UTF-8 text; invalid UTF-8 is [`Error::Upstream`].
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Error::upstream(format!("response body is not UTF-8: {e}")))
    }

    /// The raw body.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// Take the raw body.
    pub fn into_bytes(self) -> Vec<u8> {
        self.body
    }
}

/// Each link of one `Link` header value: its target (between `<` and `>`, commas and all) and
/// its `rel` (the first one, quotes removed; empty without one).
fn web_links(value: &str) -> Vec<(&str, &str)> {
    let mut links = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            break;
        };
        let target = &after[..close];
        let params = &after[close + 1..];
        // The link's parameters run to the next comma outside a quoted string.
        let mut quoted = false;
        let end = params
            .char_indices()
            .find(|&(_, c)| {
                quoted ^= c == '"';
                c == ',' && !quoted
            })
            .map_or(params.len(), |(at, _)| at);
        let rel = params[..end]
            .split(';')
            .filter_map(|param| {
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("rel")
                    .then(|| value.trim().trim_matches('"'))
            })
            .next()
            .unwrap_or_default();
        links.push((target, rel));
        rest = &params[end..];
    }
    links
}

#[cfg(test)]
mod tests {
    /// `query` and `query_opt` take the same values: text, numbers, anything `Display`.
    #[test]
    fn query_takes_text_and_numbers_alike() {
        let city = String::from("Oslo");
        let request = super::get("/v1/forecast")
            .query("city", &city)
            .query("days", 3)
            .query("units", "metric")
            .query_opt("page", Some(2u32))
            .query_opt("cursor", None::<&str>);
        let pairs: Vec<(&str, &str)> = request
            .query
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("city", "Oslo"),
                ("days", "3"),
                ("units", "metric"),
                ("page", "2")
            ]
        );
    }

    /// A header sent more than once is read whole; `header` gives its first value.
    #[test]
    fn every_value_of_a_repeated_header_is_read() {
        let header = |name: &str, value: &str| super::Header {
            name: name.into(),
            value: value.into(),
        };
        let response = super::Response {
            status: 200,
            headers: vec![
                header("Link", "<https://api.example.com/items?page=2>; rel=\"next\""),
                header("content-type", "application/json"),
                header("link", "<https://api.example.com/items?page=9>; rel=\"last\""),
            ],
            body: Vec::new(),
        };
        let links: Vec<&str> = response.header_values("LINK").collect();
        assert_eq!(links.len(), 2, "{links:?}");
        assert!(links[1].contains("rel=\"last\""));
        assert_eq!(response.header("link"), Some(links[0]));
    }

    /// Links are found by relation across one header or several, with commas inside targets
    /// and quoted parameters, unquoted and multi-valued `rel`s and any case.
    #[test]
    fn links_are_found_by_their_relation() {
        let header = |value: &str| super::Header {
            name: "Link".into(),
            value: value.into(),
        };
        let response = super::Response {
            status: 200,
            headers: vec![
                header(
                    "<https://api.example.com/items?ids=1,2&page=2>; rel=\"next\"; title=\"a, b; c\", \
                     <https://api.example.com/items?page=1>; REL=First",
                ),
                header("<https://api.example.com/items?page=9>; rel=\"last payment\""),
                header("<https://api.example.com/about>"),
            ],
            body: Vec::new(),
        };
        assert_eq!(
            response.link("next"),
            Some("https://api.example.com/items?ids=1,2&page=2")
        );
        assert_eq!(
            response.link("first"),
            Some("https://api.example.com/items?page=1")
        );
        assert_eq!(
            response.link("Payment"),
            Some("https://api.example.com/items?page=9")
        );
        assert_eq!((response.link("prev"), response.link("")), (None, None));
    }

    /// `?` takes a `serde_json` error in an action.
    #[test]
    fn a_json_error_converts_with_question_mark() {
        fn parse(text: &str) -> Result<serde_json::Value, crate::Error> {
            Ok(serde_json::from_str(text)?)
        }
        let error = parse("{").expect_err("not JSON");
        assert!(
            matches!(&error, crate::Error::Other(message) if message.starts_with("JSON: ")),
            "{error:?}"
        );
    }
}
