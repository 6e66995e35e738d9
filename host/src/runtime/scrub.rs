//! Keeping the credential out of everything that leaves the host's hands — responses to the
//! connector, passthrough bodies, log lines — in every spelling an upstream might echo it in.
//!
//! A credential's spellings are worked out, and a searcher built for each, once per credential
//! (see [`super::Credential::secret_forms`]), not on every response.

use super::manifest::AuthScheme;
use crate::upstream::UpstreamError;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use memchr::memmem::Finder;
use std::fmt;
use std::sync::{Arc, LazyLock};

/// What is replaced for every credential value found.
const REDACTED: &str = "[REDACTED]";

/// The spellings of one or more secrets, each ready to be searched for; one secret's spellings
/// come longest first, so a spelling containing another is replaced whole.
#[derive(Clone)]
pub(crate) struct SecretForms(Arc<[Finder<'static>]>);

impl SecretForms {
    /// Nothing to scrub: no credential.
    pub(crate) fn none() -> Self {
        static NONE: LazyLock<SecretForms> = LazyLock::new(|| SecretForms(Arc::from(Vec::new())));
        NONE.clone()
    }

    /// Every spelling of `secret`, sent under `auth`.
    pub(crate) fn of(secret: &str, auth: Option<&AuthScheme>) -> Self {
        Self::from_spellings(spellings(secret, auth))
    }

    /// These forms followed by those of `others` (credentials a renewal replaced).
    pub(crate) fn and_those_of(&self, others: &[String], auth: Option<&AuthScheme>) -> Self {
        let mut finders = self.0.to_vec();
        for other in others {
            finders.extend(Self::of(other, auth).0.iter().cloned());
        }
        Self(finders.into())
    }

    fn from_spellings(spellings: Vec<String>) -> Self {
        let finders: Vec<Finder<'static>> = spellings
            .iter()
            .map(|spelling| Finder::new(spelling.as_bytes()).into_owned())
            .collect();
        Self(finders.into())
    }

    /// Whether a header name (lower case, as HTTP/2 and the client library make it) holds one
    /// of the spellings in any case: such a header cannot be scrubbed into a valid name, so it
    /// is dropped.
    pub(crate) fn named_in(&self, name: &str) -> bool {
        let name = name.as_bytes();
        self.0.iter().any(|finder| {
            let needle = finder.needle();
            !needle.is_empty()
                && needle.len() <= name.len()
                && name
                    .windows(needle.len())
                    .any(|window| window.eq_ignore_ascii_case(needle))
        })
    }

    /// Whether `haystack` holds one of the spellings.
    pub(crate) fn found_in(&self, haystack: &[u8]) -> bool {
        self.0.iter().any(|finder| finder.find(haystack).is_some())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length of the longest spelling (0 when there is none).
    pub(crate) fn longest(&self) -> usize {
        self.0
            .iter()
            .map(|finder| finder.needle().len())
            .max()
            .unwrap_or(0)
    }
}

impl fmt::Debug for SecretForms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretForms({} spellings, redacted)", self.0.len())
    }
}

/// Shortest secret (or Basic password) the scrubber looks for: shorter ones would redact
/// unrelated text and protect little. The vault refuses shorter secrets.
pub const SHORTEST_SCRUBBED: usize = 6;

/// Every spelling of `secret`, sent under `auth`, that the scrubber looks for.
fn spellings(secret: &str, auth: Option<&AuthScheme>) -> Vec<String> {
    if secret.len() < SHORTEST_SCRUBBED {
        return Vec::new();
    }
    let mut forms = vec![secret.to_owned()];
    // A secret stored with its scheme for a header (`Token abc…` for `Authorization: Token
    // abc…`): an upstream that echoes the token alone echoes a credential all the same.
    if let Some((scheme, token)) = secret.split_once(' ')
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        && token.len() >= SHORTEST_SCRUBBED
        && !token.contains(' ')
    {
        forms.push(token.to_owned());
    }
    if matches!(auth, Some(AuthScheme::Basic)) {
        forms.push(base64::engine::general_purpose::STANDARD.encode(secret));
        if let Some((_, password)) = secret.split_once(':')
            && password.len() >= SHORTEST_SCRUBBED
        {
            forms.push(password.to_owned());
        }
    }
    // As the upstream may echo them: inside a URL it was sent in (query auth), or escaped in a
    // JSON string.
    let plain = forms.clone();
    for form in &plain {
        forms.extend(escaped_forms(form));
    }
    // Longest first: a spelling containing another is replaced whole, not around a hole.
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    forms
}

/// The spellings of `secret` other than itself that an upstream echoing it may use: URL-encoded
/// (as a query value, `+` for spaces; percent-encoded in either case of hex digits; and as
/// Python's `quote()` and JavaScript's `encodeURIComponent` leave some characters as they are)
/// and JSON-escaped (with and without `\/` for slashes, and with the characters .NET's and Go's
/// encoders write as `\u` escapes by default).
fn escaped_forms(secret: &str) -> Vec<String> {
    let form_encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let percent_encoded = form_encoded.replace('+', "%20");
    let lower_hex = lowercase_percent_escapes(&percent_encoded);
    let lower_hex_form = lowercase_percent_escapes(&form_encoded);
    // Python's `urllib.parse.quote` keeps `/` and `~`; `encodeURIComponent` keeps `!~*'()`.
    let python_quoted = percent_encoded_keeping(secret, b"_.-~/");
    let uri_component = percent_encoded_keeping(secret, b"-_.!~*'()");
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"').to_owned();
    let json_slashes = json.replace('/', "\\/");
    // System.Text.Json escapes `+`, the HTML-sensitive characters and quotes (upper-case hex);
    // Go's encoding/json escapes `<`, `>` and `&` (lower-case hex).
    let dotnet = json
        .replace("\\\"", "\\u0022")
        .chars()
        .map(|c| match c {
            '+' | '<' | '>' | '&' | '\'' => format!("\\u{:04X}", c as u32),
            c => c.to_string(),
        })
        .collect::<String>();
    let go: String = json
        .chars()
        .map(|c| match c {
            '<' | '>' | '&' => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        })
        .collect();
    [
        form_encoded,
        percent_encoded,
        lower_hex,
        lower_hex_form,
        python_quoted,
        uri_component,
        json,
        json_slashes,
        dotnet,
        go,
    ]
    .into_iter()
    .filter(|form| form != secret)
    .collect()
}

/// `text` percent-encoded (upper-case hex), but for ASCII letters, digits and `kept`.
fn percent_encoded_keeping(text: &str, kept: &[u8]) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || kept.contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `%2B` → `%2b`: some encoders write hex digits in lower case.
fn lowercase_percent_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// Scrub `secrets` out of a body stream. Up to the longest secret's length minus one byte is
/// held back at the end of each chunk, so an occurrence split across chunks is still found.
pub(crate) fn scrub_stream(
    body: BoxStream<'static, Result<Bytes, UpstreamError>>,
    secrets: SecretForms,
) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
    if secrets.is_empty() {
        return body;
    }
    let keep = secrets.longest() - 1;
    let state = (body, Vec::<u8>::new(), secrets, false);
    futures::stream::unfold(state, move |(mut body, mut carry, secrets, done)| async move {
        if done {
            return None;
        }
        match body.next().await {
            Some(Ok(chunk)) => {
                carry.extend_from_slice(&chunk);
                let mut data = scrub(&carry, &secrets).unwrap_or(carry);
                let cut = data.len().saturating_sub(keep);
                let tail = data.split_off(cut);
                Some((Ok(Bytes::from(data)), (body, tail, secrets, false)))
            }
            Some(Err(error)) => Some((Err(error), (body, Vec::new(), secrets, true))),
            None => {
                let rest = scrub(&carry, &secrets).unwrap_or(carry);
                Some((Ok(Bytes::from(rest)), (body, Vec::new(), secrets, true)))
            }
        }
    })
    .boxed()
}

/// `data` with every occurrence of each of `secrets` replaced; `None` when it has none.
pub(crate) fn scrub(data: &[u8], secrets: &SecretForms) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for finder in secrets.0.iter() {
        let current = out.as_deref().unwrap_or(data);
        if finder.find(current).is_none() {
            continue;
        }
        let mut replaced = Vec::with_capacity(current.len());
        let mut last = 0;
        for start in finder.find_iter(current) {
            replaced.extend_from_slice(&current[last..start]);
            replaced.extend_from_slice(REDACTED.as_bytes());
            last = start + finder.needle().len();
        }
        replaced.extend_from_slice(&current[last..]);
        out = Some(replaced);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_every_occurrence_of_every_form() {
        let secrets = SecretForms::from_spellings(vec!["ghp_secret123".to_owned(), "c2VjcmV0".to_owned()]);
        let data = b"token ghp_secret123 and ghp_secret123, b64 c2VjcmV0.";
        let scrubbed = scrub(data, &secrets).expect("something to scrub");
        assert_eq!(
            String::from_utf8(scrubbed).expect("utf8"),
            "token [REDACTED] and [REDACTED], b64 [REDACTED]."
        );
        assert!(scrub(b"nothing here", &secrets).is_none());
    }

    #[tokio::test]
    async fn streamed_bodies_are_scrubbed_across_chunk_boundaries() {
        let secret = "s3cret-token".to_owned();
        let text = "a s3cret-token b s3cr".to_owned() + "et-token c";
        // Split everywhere, including inside the secret.
        for size in 1..text.len() {
            let chunks: Vec<Result<Bytes, UpstreamError>> = text
                .as_bytes()
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let out: Vec<u8> = scrub_stream(
                futures::stream::iter(chunks).boxed(),
                SecretForms::of(&secret, None),
            )
            .map(|c| c.expect("chunk").to_vec())
            .concat()
            .await;
            assert_eq!(
                String::from_utf8(out).expect("utf8"),
                "a [REDACTED] b [REDACTED] c",
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn an_echoed_credential_is_scrubbed_url_encoded_or_json_escaped_too() {
        let secret = "s3cret+abc/def= x";
        let forms = SecretForms::of(secret, Some(&AuthScheme::Query("api_key".into())));
        for echoed in [
            "s3cret+abc/def= x",
            "s3cret%2Babc%2Fdef%3D+x",
            "s3cret%2babc%2fdef%3d+x",
            "s3cret%2Babc%2Fdef%3D%20x",
            // Python's quote(): `/` left as it is.
            "s3cret%2Babc/def%3D%20x",
            "s3cret+abc\\/def= x",
            "s3cret\\u002Babc/def= x",
        ] {
            let body = format!("{{\"url\": \"/items?api_key={echoed}&page=2\"}}");
            let scrubbed = scrub(body.as_bytes(), &forms).unwrap_or_else(|| panic!("{echoed} not found"));
            let scrubbed = String::from_utf8(scrubbed).expect("utf8");
            assert_eq!(
                scrubbed, "{\"url\": \"/items?api_key=[REDACTED]&page=2\"}",
                "{echoed}"
            );
        }
        // Basic credentials: the encoded header value and the password, in each spelling.
        let forms = SecretForms::of("user:pa/ss+word", Some(&AuthScheme::Basic));
        let basic = base64::engine::general_purpose::STANDARD.encode("user:pa/ss+word");
        for echoed in [basic.as_str(), "pa/ss+word", "pa%2Fss%2Bword", "pa\\/ss+word"] {
            assert!(scrub(echoed.as_bytes(), &forms).is_some(), "{echoed}");
        }
        let forms = SecretForms::of("tok<en>&'1234", None);
        for echoed in [
            "tok\\u003Cen\\u003E\\u0026\\u00271234",
            "tok\\u003cen\\u003e\\u0026'1234",
        ] {
            assert!(scrub(echoed.as_bytes(), &forms).is_some(), "{echoed}");
        }
        // encodeURIComponent keeps `!~*'()`, which form encoding escapes.
        let forms = SecretForms::of("tok~en(1)* !", None);
        assert!(
            scrub(b"tok~en(1)*%20!".as_slice(), &forms).is_some(),
            "encodeURIComponent"
        );
        assert!(
            SecretForms::of("short", None).is_empty(),
            "too short to scrub safely"
        );
    }

    #[test]
    fn a_credential_works_its_spellings_out_once_for_all_its_clones() {
        let credential = super::super::Credential::new("s3cret-token");
        let first = credential.secret_forms(None);
        let again = credential.clone().secret_forms(None);
        assert!(Arc::ptr_eq(&first.0, &again.0), "worked out once, on first use");
    }

    #[test]
    fn a_credential_sent_under_another_scheme_gets_that_schemes_spellings() {
        let credential = super::super::Credential::new("user:pa55word");
        let bearer = credential.secret_forms(None);
        let encoded = base64::engine::general_purpose::STANDARD.encode("user:pa55word");
        assert!(
            scrub(encoded.as_bytes(), &bearer).is_none(),
            "not a bearer spelling"
        );
        let basic = credential.secret_forms(Some(&AuthScheme::Basic));
        assert!(
            scrub(encoded.as_bytes(), &basic).is_some(),
            "the basic scheme's encoding"
        );
    }

    /// A secret stored with its header scheme (`Token …`) is scrubbed when the upstream
    /// echoes the token alone too; a secret that merely holds a space is not split up.
    #[test]
    fn the_token_of_a_secret_stored_with_its_scheme_is_scrubbed_alone() {
        let forms = SecretForms::of(
            "Token rs_secret_789",
            Some(&AuthScheme::Header(http::header::AUTHORIZATION)),
        );
        let scrubbed = scrub(b"invalid api key: rs_secret_789", &forms).expect("the token alone");
        assert_eq!(scrubbed, b"invalid api key: [REDACTED]");
        let phrase = SecretForms::of("correct horse battery", None);
        assert!(
            scrub(b"horse battery", &phrase).is_none(),
            "not a scheme and a token"
        );
    }

    #[test]
    fn forms_of_a_replaced_credential_are_scrubbed_too() {
        let current = SecretForms::of("new-token-456", None);
        let both = current.and_those_of(&["old-token-123".to_owned()], None);
        let scrubbed = scrub(b"old-token-123 then new-token-456", &both).expect("both found");
        assert_eq!(scrubbed, b"[REDACTED] then [REDACTED]");
        assert!(
            scrub(b"old-token-123", &current).is_none(),
            "the current forms alone"
        );
    }
}
