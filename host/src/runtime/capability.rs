//! The capabilities each instance imports: `http` (the only way out) and `log`.
//!
//! Everything a guest hands over is hostile input: sizes are checked before anything is
//! copied or allocated further, policy is decided here in the host, and the credential is
//! added only on its own origin and scrubbed from whatever comes back.

use super::answer_headers::AnswerHeaders;
use super::bindings::v0_2::sluice::connector::{http as wit_http, log as wit_log};
use super::bindings::{ConnectorError, Header, HttpError, Level, Request, Response};
use super::bindings::{upgrade, v0_1};
use super::manifest::AuthScheme;
use super::scrub::{SecretForms, scrub, scrub_stream};
use super::{CallContext, EgressPlan, GuestState, RuntimeLimits};
use crate::egress;
use crate::upstream::{Upstream, UpstreamError, UpstreamRequest};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::borrow::Cow;
use std::sync::Arc;
use url::Url;

/// Per-invocation state of the capabilities.
pub(crate) struct CallState {
    connector_id: Arc<str>,
    context: CallContext,
    plan: Arc<EgressPlan>,
    upstream: Arc<dyn Upstream>,
    limits: Arc<RuntimeLimits>,
    auth: Option<AuthScheme>,
    requests_sent: u32,
    /// Whether the connector asked for a request over the per-call cap: the call's failure is
    /// then told as that (`too_many_upstream_requests`), whatever the connector made of it.
    went_over_request_cap: bool,
    log_lines: u32,
    /// The last error-level line the connector logged or wrote to stderr before crashing: its
    /// own words for why (a panic message, an exception), which a failed load reports.
    last_error_line: Option<String>,
    /// That line came past the log budget, so it was not written: a crash writes it after all
    /// (see [`CallState::log_last_words`]).
    last_error_line_dropped: bool,
    /// Status of the last response to a request that carried the credential.
    credential_status: Option<u16>,
    /// Time spent waiting for upstream responses.
    upstream_time: std::time::Duration,
    /// Requests refused by policy.
    denials: u32,
    /// Whether the credential was already renewed once in this call.
    renewed: bool,
    /// Credentials replaced by a renewal: still scrubbed from what the guest sees.
    retired_secrets: Vec<String>,
    /// Why renewing a rejected credential failed, if it did.
    renewal_failure: Option<crate::runtime::RenewalFailure>,
    /// What the caller may need from the last upstream answer the guest got.
    last_answer: Option<AnswerHeaders>,
    /// Whether a request reached the upstream and was not refused for its credential.
    upstream_acted: bool,
    /// Whether the connector put the credential (which it never has) into a request: it was
    /// guessing, and the call is stopped (see [`CallState::holds_the_credential`]).
    sent_the_credential: bool,
    /// What the connector may write to the log across its calls (none while loading).
    log_rate: Option<Arc<super::log_rate::LogRate>>,
}

impl CallState {
    pub(crate) fn new(
        connector_id: &str,
        context: CallContext,
        plan: Arc<EgressPlan>,
        upstream: Arc<dyn Upstream>,
        limits: Arc<RuntimeLimits>,
        auth: Option<AuthScheme>,
    ) -> Self {
        Self {
            connector_id: connector_id.into(),
            context,
            plan,
            upstream,
            limits,
            auth,
            requests_sent: 0,
            went_over_request_cap: false,
            log_lines: 0,
            last_error_line: None,
            last_error_line_dropped: false,
            credential_status: None,
            upstream_time: std::time::Duration::ZERO,
            denials: 0,
            renewed: false,
            retired_secrets: Vec::new(),
            renewal_failure: None,
            last_answer: None,
            upstream_acted: false,
            sent_the_credential: false,
            log_rate: None,
        }
    }

    /// The same, its log lines also within the connector's rate across calls.
    pub(crate) fn with_log_rate(mut self, log_rate: Arc<super::log_rate::LogRate>) -> Self {
        self.log_rate = Some(log_rate);
        self
    }
}

/// Headers the host owns: credentials, routing, framing and hop-by-hop — and content coding and
/// ranges, because the host scrubs the credential from whole, plain response bodies: a gzipped
/// body or a body fetched in pieces could carry an echoed credential past the scrubber.
pub(crate) fn is_forbidden_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
            | "forwarded"
            | "accept-encoding"
            | "range"
            | "if-range"
    ) || name.starts_with("proxy-")
        || name.starts_with("x-forwarded-")
}

/// Remove every `param` pair from `url`'s query, leaving the others as they were.
fn remove_query_param(url: &mut Url, param: &str) {
    if !url.query_pairs().any(|(name, _)| name == param) {
        return;
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name != param)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
}

/// `raw` as one of the methods a connector may use (those an endpoint may declare), in any case.
/// Not any token: `TRACE` and its kin echo the request back, `CONNECT` opens a tunnel, and a
/// method is bounded by no other size check.
fn upstream_method(raw: &str) -> Result<Method, HttpError> {
    crate::runtime::manifest::HTTP_METHODS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(raw))
        .and_then(|known| Method::from_bytes(known.as_bytes()).ok())
        .ok_or_else(|| {
            let shown: String = raw.chars().take(16).collect();
            let cut = if shown.len() < raw.len() { "…" } else { "" };
            invalid(format!(
                "method `{}{cut}` is not one of {}",
                shown.escape_debug(),
                crate::runtime::manifest::HTTP_METHODS.join(", ")
            ))
        })
}

fn invalid(message: impl Into<String>) -> HttpError {
    HttpError::Invalid(message.into())
}

fn parse_url(text: &str) -> Result<Url, HttpError> {
    Url::parse(text).map_err(|error| match error {
        // `items/7` rather than `/items/7`: say how a path is written.
        url::ParseError::RelativeUrlWithoutBase => invalid(
            "invalid URL: a path must start with `/` (it is resolved against the base URL), \
             anything else must be an absolute URL",
        ),
        other => invalid(format!("invalid URL: {other}")),
    })
}

/// Whether the path part of `raw` has a segment URL parsing treats as `.` or `..`: spelt with
/// dots or `%2E`, between `/` or `\` (a separator too in http URLs) — or one an upstream
/// server may still read as such: before a `;` (path parameters: Tomcat reads `..;x` as `..`)
/// or between an encoded `/` or `\` (servers that decode before resolving dots).
fn has_dot_segment(raw: &str) -> bool {
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    path.split(['/', '\\']).any(|segment| {
        segment.split(';').any(|piece| {
            if !piece.contains('%') {
                return is_dot_segment(piece);
            }
            // Rare (an encoded character in the segment): only then a lower-cased copy.
            let piece = piece.to_ascii_lowercase();
            piece
                .split("%2f")
                .flat_map(|part| part.split("%5c"))
                .any(is_dot_segment)
        })
    })
}

/// Whether `segment` is `.` or `..`, spelt with dots or `%2E`. Checked on every upstream
/// request: compared in place, without a lower-cased copy.
fn is_dot_segment(segment: &str) -> bool {
    const DOT_SEGMENTS: [&str; 6] = [".", "%2e", "..", ".%2e", "%2e.", "%2e%2e"];
    DOT_SEGMENTS.iter().any(|dots| segment.eq_ignore_ascii_case(dots))
}

/// Whether `url` is `base` (a serialized URL without its trailing `/`) or lies under it.
fn stays_under(url: &Url, base: &str) -> bool {
    url.as_str()
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#']))
}

fn denied(message: impl Into<String>) -> HttpError {
    HttpError::Denied(message.into())
}

impl CallState {
    /// The limits the call runs under.
    pub(crate) fn limits(&self) -> &RuntimeLimits {
        &self.limits
    }

    /// Why renewing a rejected credential failed, if it did.
    pub(crate) fn renewal_failure(&self) -> Option<&crate::runtime::RenewalFailure> {
        self.renewal_failure.as_ref()
    }

    /// What the host supplied for this call.
    pub(crate) fn context(&self) -> &CallContext {
        &self.context
    }

    /// Status of the last upstream response to a request that carried the credential.
    pub(crate) fn credential_status(&self) -> Option<u16> {
        self.credential_status
    }

    /// The headers a caller may need from the last upstream answer the guest got, if the
    /// connector reported its `status` (see [`AnswerHeaders`]); taken, once the guest is done.
    pub(crate) fn take_answer_headers(&mut self, status: u16) -> Vec<(String, String)> {
        self.last_answer
            .take()
            .map(|answer| answer.for_status(status))
            .unwrap_or_default()
    }

    /// Whether a request reached the upstream and was not refused for its credential: answered
    /// otherwise, or not answered at all (it may have been acted on all the same).
    pub(crate) fn upstream_acted(&self) -> bool {
        self.upstream_acted
    }

    /// Whether the connector put the credential into a request (and the call was stopped).
    pub(crate) fn sent_the_credential(&self) -> bool {
        self.sent_the_credential
    }

    /// Whether `prepared` (as the connector made it, before the host adds the credential)
    /// holds a spelling of the credential, or a call already sent one. A connector never has
    /// the credential, so it can only have guessed it; and since answers are scrubbed, an
    /// upstream echoing a guess would tell it which guess was right. Refusing such requests,
    /// and stopping the call, leaves it one loud yes-or-no per call instead of millions of
    /// silent guesses per request.
    fn holds_the_credential(&self, prepared: &Prepared) -> bool {
        if self.sent_the_credential {
            return true;
        }
        let forms = self.secret_forms();
        !forms.is_empty()
            && (forms.found_in(prepared.url.as_str().as_bytes())
                || prepared
                    .headers
                    .values()
                    .any(|value| forms.found_in(value.as_bytes()))
                || prepared.body.as_ref().is_some_and(|body| forms.found_in(body)))
    }

    /// What a connector that put the credential into a request is told; the call then fails
    /// whatever the connector makes of it (see [`CallState::sent_the_credential`]).
    fn stopped_for_the_credential(&mut self) -> HttpError {
        if !self.sent_the_credential {
            self.sent_the_credential = true;
            tracing::warn!(
                connector = %self.connector_id,
                tx = %self.context.transaction_key,
                "the connector put the connection's credential into an upstream request (it never has it, so it \
                 guessed it); the request was refused and the call stopped: review this connector"
            );
        }
        denied(
            "the request holds the connection's credential, which the gateway adds itself; the call is stopped",
        )
    }

    /// Whether the connector asked for more upstream requests than one call may make.
    pub(crate) fn went_over_request_cap(&self) -> bool {
        self.went_over_request_cap
    }

    /// Time spent waiting for upstream responses.
    pub(crate) fn upstream_time(&self) -> std::time::Duration {
        self.upstream_time
    }

    /// Validate the guest's request — sizes, method, destination, headers — or say why not.
    /// The credential is not added yet: redirect hops start again from here.
    fn prepare(&self, request: Request) -> Result<Prepared, HttpError> {
        let limits = &self.limits;
        if request.url.len() > limits.max_url_bytes {
            return Err(HttpError::TooLarge(format!(
                "URL longer than {} bytes",
                limits.max_url_bytes
            )));
        }
        if request.headers.len() > limits.max_request_headers {
            return Err(HttpError::TooLarge(format!(
                "more than {} request headers",
                limits.max_request_headers
            )));
        }
        let header_bytes: usize = request.headers.iter().map(|h| h.name.len() + h.value.len()).sum();
        if header_bytes > limits.max_header_bytes {
            return Err(HttpError::TooLarge(format!(
                "request headers larger than {} bytes",
                limits.max_header_bytes
            )));
        }
        if request
            .body
            .as_ref()
            .is_some_and(|b| b.len() > limits.max_request_body)
        {
            return Err(HttpError::TooLarge(format!(
                "request body larger than {} bytes",
                limits.max_request_body
            )));
        }
        let method = upstream_method(&request.method)?;

        let url = self.resolve_url(&request.url)?;
        self.check_destination(&url)?;
        if let Some(param) = self.credential_query_param()
            && url.query_pairs().any(|(name, _)| name == param)
        {
            return Err(denied(format!("query parameter `{param}` is set by the gateway")));
        }

        let mut headers = HeaderMap::with_capacity(request.headers.len() + 1);
        for Header { name, value } in request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("`{name}` is not a valid header name")))?;
            if is_forbidden_header(&name) || self.is_credential_header(&name) {
                return Err(denied(format!("header `{name}` is set by the gateway")));
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| invalid(format!("header `{name}` has an invalid value")))?;
            headers.append(name, value);
        }

        Ok(Prepared {
            method,
            url,
            headers,
            body: request.body.map(Bytes::from),
        })
    }

    /// The destination must be on the allowlist and, if an IP literal, a permitted address
    /// (names are checked when they resolve, in the transport).
    fn check_destination(&self, url: &Url) -> Result<(), HttpError> {
        // Say why nothing goes out of describe(), rather than blame the allowlist the
        // connector may well have declared.
        if self.plan.is_while_loading() {
            return Err(denied(
                "describe() may not send upstream requests: a connector reaches its upstream from invoke() only",
            ));
        }
        if !egress::is_allowed(&self.plan.allowlist, url) {
            return Err(denied(format!(
                "{} is not among this connector's allowed hosts",
                origin_text(url)
            )));
        }
        if let Some(ip) = egress::ip_literal(url)
            && let Some(why) = self.limits.address_policy.refusal(ip)
        {
            return Err(denied(format!(
                "address {ip} is not reachable from the gateway: {why}"
            )));
        }
        Ok(())
    }

    /// The request to send for `prepared`, with the credential added when the destination is
    /// the credential's own origin; also says whether it was added.
    fn finalize(&self, prepared: &Prepared) -> Result<(UpstreamRequest, bool), HttpError> {
        let mut url = prepared.url.clone();
        let mut headers = prepared.headers.clone();
        let with_credential = self.inject_credential(&mut url, &mut headers)?;
        let request = UpstreamRequest {
            method: prepared.method.clone(),
            url,
            headers,
            body: prepared.body.clone(),
            timeout: self.limits.upstream_timeout,
            max_response_bytes: self.limits.max_response_body,
        };
        Ok((request, with_credential))
    }

    /// What the connector is told of a request refused before it was sent: the refusal, which
    /// counts against the per-call cap as a sent request does, so that a connector looping on
    /// a refused host is ended by the cap as one looping on an allowed host is (and told so,
    /// once it is over it).
    fn refused_before_sending(&mut self, refusal: HttpError) -> HttpError {
        match self.count_request() {
            Ok(()) => refusal,
            Err(over_the_cap) => over_the_cap,
        }
    }

    /// Count one upstream request against the per-invocation cap.
    fn count_request(&mut self) -> Result<(), HttpError> {
        if self.requests_sent >= self.limits.max_upstream_requests {
            self.went_over_request_cap = true;
            return Err(HttpError::TooLarge(format!(
                "more than {} upstream requests in one call",
                self.limits.max_upstream_requests
            )));
        }
        self.requests_sent += 1;
        Ok(())
    }

    /// Send `prepared`, following up to [`MAX_REDIRECTS`] redirects here in the host: every
    /// hop is checked against the allowlist and address policy again, and the credential is
    /// added again only when the hop goes to the credential's own origin.
    async fn send_following_redirects(
        &mut self,
        mut prepared: Prepared,
    ) -> Result<crate::upstream::UpstreamResponse, HttpError> {
        let mut hops = 0;
        loop {
            self.count_request()?;
            let (request, with_credential) = self.finalize(&prepared)?;
            tracing::debug!(connector = %self.connector_id, tx = %self.context.transaction_key, method = %request.method, host = ?request.url.host_str(), "upstream request");
            let sent_at = std::time::Instant::now();
            let response = self.upstream.send(request).await;
            self.upstream_time += sent_at.elapsed();
            let refused_credential =
                matches!(&response, Ok(answer) if with_credential && answer.status == 401);
            if !refused_credential {
                self.upstream_acted = true;
            }
            let response = response.map_err(upstream_error)?;
            if self
                .send_again_renewed(with_credential, response.status, true)
                .await
            {
                // The same hop again, once, with the renewed credential.
                continue;
            }
            let Some(next) = redirect_target(&prepared.url, &response) else {
                return Ok(response);
            };
            if hops == MAX_REDIRECTS {
                return Err(HttpError::Transport(format!(
                    "more than {MAX_REDIRECTS} redirects"
                )));
            }
            hops += 1;
            let mut next = next?;
            self.check_destination(&next)?;
            // A location that kept the query the credential went in must not carry it to
            // another origin (on its own it is added again by `finalize`).
            if let Some(param) = self.credential_query_param() {
                remove_query_param(&mut next, param);
            }
            // As browsers do: 303, and 301/302 after a POST, continue as a body-less GET.
            if response.status == 303
                || (matches!(response.status, 301 | 302) && prepared.method == Method::POST)
            {
                prepared.method = Method::GET;
                prepared.body = None;
                prepared.headers.remove(http::header::CONTENT_TYPE);
            }
            prepared.url = next;
        }
    }

    /// Note the status a request answered (`status`), and whether to send it again: when it
    /// carried the credential (`with_credential`), the upstream refused it (401), the request
    /// can be sent again (`replayable`: no body streamed through) and the credential was
    /// renewed.
    async fn send_again_renewed(&mut self, with_credential: bool, status: u16, replayable: bool) -> bool {
        if !with_credential {
            return false;
        }
        self.credential_status = Some(status);
        status == 401 && replayable && self.renew_credential().await
    }

    /// After a 401 on the credential: renew it once per call if the connection can be
    /// renewed. Returns whether the request should be retried with the new credential; a
    /// failed renewal is remembered for the caller and the guest sees the 401.
    async fn renew_credential(&mut self) -> bool {
        if self.renewed {
            return false;
        }
        let (Some(renewal), Some(rejected)) = (self.context.renewal.clone(), self.context.credential.clone())
        else {
            return false;
        };
        self.renewed = true;
        match renewal.renew(rejected.clone()).await {
            Ok(fresh) => {
                self.retired_secrets.push(rejected.secret().to_owned());
                self.context.credential = Some(fresh);
                true
            }
            Err(failure) => {
                tracing::warn!(connector = %self.connector_id, tx = %self.context.transaction_key, reason = %failure.message, "credential rejected and not renewed");
                self.renewal_failure = Some(failure);
                false
            }
        }
    }

    /// A path is appended to the plan's base URL, and must stay under the base URL's path;
    /// anything else must be an absolute URL.
    fn resolve_url(&self, raw: &str) -> Result<Url, HttpError> {
        let parsed = if raw.starts_with('/') && !raw.starts_with("//") {
            let base = &self.plan.base_url;
            if base.is_empty() {
                return Err(denied("no upstream is reachable here"));
            }
            // URL parsing resolves `.` and `..` segments, percent-encoded ones too (`%2E%2E` is
            // what the SDK's `segment("..")` sends), so caller-supplied text could change which
            // path a request names: refused, and the result checked to be under the base URL
            // whatever the parser does.
            if has_dot_segment(raw) {
                return Err(denied("the path has a `.` or `..` segment"));
            }
            let joined = parse_url(&format!("{base}{raw}"))?;
            if !stays_under(&joined, base) {
                return Err(denied(format!(
                    "the path leaves the base URL's path `{base}` (`..` segments)"
                )));
            }
            joined
        } else {
            parse_url(raw)?
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(denied(format!("scheme `{}` is not allowed", parsed.scheme())));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(denied("credentials in URLs are not allowed"));
        }
        Ok(parsed)
    }

    fn is_credential_header(&self, name: &HeaderName) -> bool {
        self.auth.as_ref().and_then(AuthScheme::credential_header) == Some(name)
    }

    /// The query parameter the credential travels in, if it does.
    fn credential_query_param(&self) -> Option<&str> {
        self.auth.as_ref().and_then(AuthScheme::credential_query_param)
    }

    /// Add the credential, but only for the credential's own origin. Returns whether it did.
    fn inject_credential(&self, url: &mut Url, headers: &mut HeaderMap) -> Result<bool, HttpError> {
        let (Some(credential), Some(auth), Some(origin)) =
            (&self.context.credential, &self.auth, &self.plan.credential_origin)
        else {
            return Ok(false);
        };
        if !origin.matches(url) {
            return Ok(false);
        }
        let secret = credential.secret();
        let sensitive = |value: String| {
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| HttpError::Other("stored credential is not a valid header value".into()))?;
            value.set_sensitive(true);
            Ok::<_, HttpError>(value)
        };
        match auth {
            AuthScheme::None => return Ok(false),
            AuthScheme::Bearer | AuthScheme::OAuth2(_) => {
                headers.insert(
                    http::header::AUTHORIZATION,
                    sensitive(format!("Bearer {secret}"))?,
                );
            }
            AuthScheme::Basic => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
                headers.insert(
                    http::header::AUTHORIZATION,
                    sensitive(format!("Basic {encoded}"))?,
                );
            }
            AuthScheme::Header(name) => {
                headers.insert(name.clone(), sensitive(secret.to_owned())?);
            }
            AuthScheme::Query(param) => {
                // Drop any guest-supplied value first so the credential cannot be shadowed.
                remove_query_param(url, param);
                url.query_pairs_mut().append_pair(param, secret);
            }
        }
        Ok(true)
    }

    /// Every form in which the credential might come back: worked out once per credential,
    /// plus those of credentials a renewal replaced during this call.
    fn secret_forms(&self) -> SecretForms {
        let Some(credential) = &self.context.credential else {
            return SecretForms::none();
        };
        let auth = self.auth.as_ref();
        let current = credential.secret_forms(auth);
        if self.retired_secrets.is_empty() {
            return current;
        }
        current.and_those_of(&self.retired_secrets, auth)
    }
}

/// `text` with line breaks and other control characters written as escapes (`\n`, `\u{1b}`).
fn escape_controls(text: String) -> String {
    if !text.contains(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Redirects the host follows for a connector before handing it the final response.
const MAX_REDIRECTS: usize = 5;

/// Refused upstream requests of one call that are written to the gateway's log.
const LOGGED_REFUSALS_PER_CALL: u32 = 3;

/// Longest refusal written to the log.
const LOGGED_REFUSAL_BYTES: usize = 512;

/// A validated guest request without the credential.
#[derive(Debug, Clone)]
struct Prepared {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
}

/// Where a redirect response points, resolved against `current`; `None` when it is not a
/// redirect the host follows.
fn redirect_target(
    current: &Url,
    response: &crate::upstream::UpstreamResponse,
) -> Option<Result<Url, HttpError>> {
    if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = response.headers.get(http::header::LOCATION)?;
    let parsed = location
        .to_str()
        .ok()
        .and_then(|location| current.join(location).ok())
        .filter(|url| {
            matches!(url.scheme(), "http" | "https") && url.username().is_empty() && url.password().is_none()
        })
        .ok_or_else(|| denied("the upstream redirected to an unusable location"));
    Some(parsed)
}

fn origin_text(url: &Url) -> String {
    url.origin().ascii_serialization()
}

pub(crate) fn upstream_error(error: UpstreamError) -> HttpError {
    match error {
        UpstreamError::Denied(m) => HttpError::Denied(m),
        e @ UpstreamError::Timeout(_) => HttpError::Timeout(e.to_string()),
        e @ UpstreamError::TooLarge(_) => HttpError::TooLarge(e.to_string()),
        UpstreamError::Transport(m) => HttpError::Transport(m),
        UpstreamError::Unusable(m) => HttpError::Other(m),
    }
}

impl wit_http::Host for GuestState {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let call = &mut self.call;
        // The call was stopped for sending the credential: it fails whatever the connector
        // does next, so a connector that keeps sending is ended here, not left to spin.
        if call.sent_the_credential {
            return Err(wasmtime::format_err!(
                "the call was stopped: a request held the connection's credential"
            ));
        }
        // A failed request ends what the last answer had to say.
        call.last_answer = None;
        let sent = match call.prepare(request) {
            Ok(prepared) if call.holds_the_credential(&prepared) => Err(call.stopped_for_the_credential()),
            Ok(prepared) => call.send_following_redirects(prepared).await,
            Err(error) => Err(call.refused_before_sending(error)),
        };
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                if matches!(error, HttpError::Denied(_)) {
                    call.denials += 1;
                    if let Some(denials) = &call.context.egress_denials {
                        denials.count(&call.connector_id);
                    }
                    // The first refusals of a call say what was refused; a connector that
                    // keeps trying adds no more lines (the metric still counts them).
                    // Cut: a refusal may quote a URL of many kilobytes.
                    if call.denials <= LOGGED_REFUSALS_PER_CALL {
                        let error = crate::error::cut_to(format!("{error:?}"), LOGGED_REFUSAL_BYTES);
                        tracing::warn!(connector = %call.connector_id, tx = %call.context.transaction_key, %error, "upstream request refused");
                    }
                }
                return Ok(Err(error));
            }
        };
        let response = call.scrubbed(response);
        call.last_answer = Some(AnswerHeaders::of(&response));
        Ok(Ok(response))
    }
}

impl CallState {
    /// `error`, as the connector reported it, with every form of the credential in its text
    /// replaced: it may be relayed to the caller, who never sees the credential.
    pub(crate) fn scrubbed_error(&self, error: ConnectorError) -> ConnectorError {
        let secrets = self.secret_forms();
        let clean = |text: String| match scrub(text.as_bytes(), &secrets) {
            Some(scrubbed) => String::from_utf8_lossy(&scrubbed).into_owned(),
            None => text,
        };
        match error {
            ConnectorError::BadParams(m) => ConnectorError::BadParams(clean(m)),
            ConnectorError::UnknownEndpoint(m) => ConnectorError::UnknownEndpoint(clean(m)),
            ConnectorError::Upstream(m) => ConnectorError::Upstream(clean(m)),
            ConnectorError::Other(m) => ConnectorError::Other(clean(m)),
            ConnectorError::Http(http) => ConnectorError::Http(match http {
                HttpError::Denied(m) => HttpError::Denied(clean(m)),
                HttpError::Timeout(m) => HttpError::Timeout(clean(m)),
                HttpError::TooLarge(m) => HttpError::TooLarge(clean(m)),
                HttpError::Invalid(m) => HttpError::Invalid(clean(m)),
                HttpError::Transport(m) => HttpError::Transport(clean(m)),
                HttpError::Other(m) => HttpError::Other(clean(m)),
            }),
        }
    }

    /// The response with every form of the credential replaced, as the guest (or a
    /// passthrough caller) gets it.
    pub(crate) fn scrubbed(&self, response: crate::upstream::UpstreamResponse) -> Response {
        let secrets = self.secret_forms();
        let headers = scrubbed_headers(&response.headers, &secrets);
        let body = scrub(&response.body, &secrets).unwrap_or_else(|| response.body.to_vec());
        Response {
            status: response.status,
            headers,
            body,
        }
    }

    /// Send a request on the host's own behalf (passthrough) under exactly the rules a
    /// connector's requests follow, redirects returned rather than followed, with both bodies
    /// streamed: `body` is sent, and the response body is scrubbed as it streams.
    pub(crate) async fn stream_for_host(
        &mut self,
        request: Request,
        body: Option<crate::upstream::RequestBody>,
    ) -> Result<
        (
            u16,
            Vec<Header>,
            futures::stream::BoxStream<'static, Result<Bytes, UpstreamError>>,
        ),
        HttpError,
    > {
        let prepared = self.prepare(request)?;
        // A body streams through once; without one, a rejected credential is renewed and the
        // request sent again, once, as a connector's is.
        let replayable = body.is_none();
        let mut body = body;
        let response = loop {
            self.count_request()?;
            let (request, with_credential) = self.finalize(&prepared)?;
            let response = self
                .upstream
                .send_streaming(request, body.take())
                .await
                .map_err(upstream_error)?;
            if self
                .send_again_renewed(with_credential, response.status, replayable)
                .await
            {
                continue;
            }
            break response;
        };
        let secrets = self.secret_forms();
        let headers = scrubbed_headers(&response.headers, &secrets);
        Ok((response.status, headers, scrub_stream(response.body, secrets)))
    }
}

/// An upstream answer's headers with every form of the credential replaced in their values,
/// and without any header whose name holds one (an upstream echoing it as `x-<token>: 1`).
fn scrubbed_headers(headers: &HeaderMap, secrets: &SecretForms) -> Vec<Header> {
    headers
        .iter()
        .filter(|(name, _)| !secrets.named_in(name.as_str()))
        .map(|(name, value)| Header {
            name: name.as_str().to_owned(),
            value: match scrub(value.as_bytes(), secrets) {
                Some(scrubbed) => String::from_utf8_lossy(&scrubbed).into_owned(),
                None => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            },
        })
        .collect()
}

/// One tracing event at a connector's chosen `level` (tracing wants the level spelt out).
macro_rules! connector_event {
    ($level:expr, $($event:tt)+) => {
        match $level {
            Level::Trace => tracing::trace!(target: "connector", $($event)+),
            Level::Debug => tracing::debug!(target: "connector", $($event)+),
            Level::Info => tracing::info!(target: "connector", $($event)+),
            Level::Warn => tracing::warn!(target: "connector", $($event)+),
            Level::Error => tracing::error!(target: "connector", $($event)+),
        }
    };
}

impl CallState {
    /// Write one of the connector's log lines, attributed to it and the request: the `log`
    /// capability's lines, and what it wrote to `stream` (stdout or stderr) once it is done.
    /// Past the invocation's line budget lines are dropped; the credential is scrubbed, control
    /// characters escaped and long lines truncated.
    pub(crate) fn log_line(&mut self, level: Level, message: Cow<'_, str>, stream: Option<&'static str>) {
        let is_error = matches!(level, Level::Error);
        let over_budget = self.log_lines_left() == 0;
        if over_budget {
            self.over_log_budget(1);
            // Kept aside, not written: a crash's message may come after a flood of lines.
            if is_error {
                self.last_error_line = Some(self.presentable(message));
                self.last_error_line_dropped = true;
            }
            return;
        }
        self.log_lines += 1;
        let message = self.presentable(message);
        if is_error {
            self.last_error_line = Some(message.clone());
            self.last_error_line_dropped = false;
        }
        let (connector, tx) = (&*self.connector_id, self.context.transaction_key.as_str());
        let admission = match &self.log_rate {
            Some(rate) => rate.admit(message.len()),
            None => super::log_rate::Admission::Write { dropped_before: 0 },
        };
        match admission {
            super::log_rate::Admission::Drop => {
                // A crash still gets its last words written (see `log_last_words`).
                if is_error {
                    self.last_error_line_dropped = true;
                }
                return;
            }
            super::log_rate::Admission::Write { dropped_before } if dropped_before > 0 => {
                tracing::warn!(
                    connector,
                    tx,
                    dropped_lines = dropped_before,
                    "the connector wrote more than {} KiB of log a second across its calls; lines were dropped",
                    super::log_rate::BYTES_PER_SECOND as u64 >> 10
                );
            }
            super::log_rate::Admission::Write { .. } => {}
        }
        match stream {
            None => connector_event!(level, connector, tx, "{message}"),
            Some(stream) => connector_event!(level, connector, tx, stream, "{message}"),
        }
    }

    /// After a crash, write its own words for why if the log budget had left no room for them:
    /// the last error-level line, typically the panic message or exception. One line over the
    /// budget, so that "see the gateway log for transaction …" always finds why.
    pub(crate) fn log_last_words(&mut self) {
        if !std::mem::take(&mut self.last_error_line_dropped) {
            return;
        }
        if let Some(message) = &self.last_error_line {
            let (connector, tx) = (&*self.connector_id, self.context.transaction_key.as_str());
            tracing::error!(target: "connector", connector, tx, past_log_budget = true, "{message}");
        }
    }

    /// `message` as the gateway's log may show it: the credential scrubbed, control characters
    /// escaped, and cut to the longest line allowed.
    fn presentable(&self, message: Cow<'_, str>) -> String {
        let longest_line = self.limits.max_log_line_bytes;
        let forms = self.secret_forms();
        // Only the start of a long line is shown: scrub and escape that much, not the
        // megabytes a connector may send (a host call holds its serving thread meanwhile).
        // Twice the line's length leaves room for text that scrubbing shortens.
        let window = 2 * longest_line + forms.longest();
        let raw = message.as_bytes();
        let cut_short = raw.len() > window;
        let raw = &raw[..raw.len().min(window)];
        let mut scrubbed = scrub(raw, &forms).unwrap_or_else(|| raw.to_vec());
        if cut_short {
            // A spelling the window cut in two is not found whole: drop where its start could be.
            scrubbed.truncate(scrubbed.len().saturating_sub(forms.longest()));
        }
        // One guest line stays one line of the gateway's log: it cannot forge entries.
        let mut message = escape_controls(String::from_utf8_lossy(&scrubbed).into_owned());
        if cut_short || message.len() > longest_line {
            let mut cut = longest_line.min(message.len());
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("…[truncated]");
        }
        message
    }

    /// The last error-level line the connector logged (see `last_error_line`).
    pub(crate) fn last_error_line(&self) -> Option<&str> {
        self.last_error_line.as_deref()
    }

    /// Log lines this invocation may still write.
    pub(crate) fn log_lines_left(&self) -> usize {
        self.limits.max_log_lines.saturating_sub(self.log_lines) as usize
    }

    /// Count `lines` the budget had no room for; the first time, say that lines are dropped.
    pub(crate) fn over_log_budget(&mut self, lines: usize) {
        if lines == 0 {
            return;
        }
        let before = self.log_lines;
        self.log_lines = before.saturating_add(u32::try_from(lines).unwrap_or(u32::MAX));
        if before <= self.limits.max_log_lines {
            tracing::warn!(connector = %self.connector_id, tx = %self.context.transaction_key, "connector log budget exhausted; further lines dropped");
        }
    }

    /// Say that the connector wrote `dropped` bytes to stdout and stderr past the `kept` bytes
    /// kept of them.
    pub(crate) fn note_dropped_output(&self, dropped: u64, kept: usize) {
        tracing::warn!(connector = %self.connector_id, tx = %self.context.transaction_key, dropped_bytes = dropped, "connector wrote more than {} KiB to stdout and stderr; the rest was dropped", kept >> 10);
    }
}

impl wit_log::Host for GuestState {
    async fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.call.log_line(level, Cow::Owned(message), None);
        Ok(())
    }
}

impl super::bindings::v0_2::sluice::connector::types::Host for GuestState {}

// Components built against 0.1 get the same capabilities, converted at the boundary.
impl v0_1::sluice::connector::http::Host for GuestState {
    async fn send(
        &mut self,
        request: v0_1::sluice::connector::types::Request,
    ) -> wasmtime::Result<
        Result<v0_1::sluice::connector::types::Response, v0_1::sluice::connector::types::HttpError>,
    > {
        let result = <Self as wit_http::Host>::send(self, upgrade::request(request)).await?;
        Ok(result.map(upgrade::response).map_err(upgrade::http_error_down))
    }
}

impl v0_1::sluice::connector::log::Host for GuestState {
    async fn write(
        &mut self,
        level: v0_1::sluice::connector::types::Level,
        message: String,
    ) -> wasmtime::Result<()> {
        <Self as wit_log::Host>::write(self, upgrade::level(level), message).await
    }
}

impl v0_1::sluice::connector::types::Host for GuestState {}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{CallContext, RuntimeLimits};
    use super::*;

    struct Unreachable;

    impl Upstream for Unreachable {
        fn send(
            &self,
            _: UpstreamRequest,
        ) -> futures::future::BoxFuture<'_, Result<crate::upstream::UpstreamResponse, UpstreamError>>
        {
            Box::pin(async { Err(UpstreamError::Transport("unused".into())) })
        }
    }

    /// An API at `api.example.com` that redirects every request to `uploads.example.com`,
    /// which answers; records what it was sent (URL and headers).
    #[derive(Default)]
    struct RedirectingToUploads {
        sent: std::sync::Mutex<Vec<(Url, HeaderMap)>>,
    }

    impl Upstream for RedirectingToUploads {
        fn send(
            &self,
            request: UpstreamRequest,
        ) -> futures::future::BoxFuture<'_, Result<crate::upstream::UpstreamResponse, UpstreamError>>
        {
            let to_api = request.url.host_str() == Some("api.example.com");
            // The location keeps the request's query, as some APIs' redirects do.
            let location = match request.url.query() {
                Some(query) => format!("https://uploads.example.com/file?a=1&{query}"),
                None => "https://uploads.example.com/file?a=1".to_owned(),
            };
            self.sent
                .lock()
                .expect("sent")
                .push((request.url, request.headers));
            let mut headers = HeaderMap::new();
            if to_api {
                headers.insert(
                    http::header::LOCATION,
                    HeaderValue::from_str(&location).expect("location"),
                );
            }
            let status = if to_api { 302 } else { 200 };
            Box::pin(async move {
                Ok(crate::upstream::UpstreamResponse {
                    status,
                    headers,
                    body: Bytes::new(),
                })
            })
        }
    }

    /// A call with the credential `s3cret-token` and the default limits.
    pub(crate) fn call_state(auth: AuthScheme) -> CallState {
        call_state_with(auth, Arc::new(Unreachable))
    }

    /// The same, sending through `upstream`.
    fn call_state_with(auth: AuthScheme, upstream: Arc<dyn Upstream>) -> CallState {
        let api = crate::egress::HostPattern::parse("https://api.example.com").expect("pattern");
        let uploads = crate::egress::HostPattern::parse("https://uploads.example.com").expect("pattern");
        let plan = EgressPlan {
            base_url: "https://api.example.com/v3".into(),
            allowlist: vec![api.clone(), uploads],
            credential_origin: Some(api),
        };
        let context = CallContext {
            transaction_key: "txn_test".into(),
            credential: Some(super::super::Credential::new("s3cret-token")),
            ..CallContext::default()
        };
        CallState::new(
            "test",
            context,
            Arc::new(plan),
            upstream,
            Arc::new(RuntimeLimits::default()),
            Some(auth),
        )
    }

    /// A path written without its leading `/` is told how paths are written.
    #[test]
    fn a_relative_path_is_told_to_start_with_a_slash() {
        let refused = parse_url("items/7").map(|_| ());
        assert!(
            matches!(&refused, Err(HttpError::Invalid(why)) if why.contains("a path must start with `/`")),
            "{refused:?}"
        );
        let other = parse_url("https://exa mple.com/").map(|_| ());
        assert!(
            matches!(&other, Err(HttpError::Invalid(why)) if why.starts_with("invalid URL: invalid")),
            "{other:?}"
        );
    }

    /// describe() sends nothing, and is told that this is why.
    #[test]
    fn describe_is_told_it_may_not_send() {
        let call = CallState::new(
            "<loading>",
            CallContext::default(),
            Arc::new(EgressPlan::while_loading()),
            Arc::new(Unreachable),
            Arc::new(RuntimeLimits::default()),
            None,
        );
        let refused = call
            .prepare(request("https://api.example.com/x", &[]))
            .map(|_| ());
        assert!(
            matches!(&refused, Err(HttpError::Denied(why)) if why.starts_with("describe() may not send")),
            "{refused:?}"
        );
    }

    /// Each scheme puts the credential where it says, with its value, on the credential's
    /// origin; a redirect to another allowed origin gets none of it, in any form.
    #[tokio::test]
    async fn the_credential_goes_where_its_scheme_says_and_not_past_a_redirect() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("s3cret-token");
        let bearer = ("authorization", "Bearer s3cret-token".to_owned());
        let basic = ("authorization", format!("Basic {encoded}"));
        let header = ("x-api-key", "s3cret-token".to_owned());
        for (auth, expected_header) in [
            (AuthScheme::Bearer, Some(bearer)),
            (AuthScheme::Basic, Some(basic)),
            (
                AuthScheme::Header(HeaderName::from_static("x-api-key")),
                Some(header),
            ),
            (AuthScheme::Query("api_key".into()), None),
        ] {
            let upstream = Arc::new(RedirectingToUploads::default());
            let mut call = call_state_with(auth.clone(), upstream.clone());
            let prepared = call.prepare(request("/x", &[])).expect("prepared");
            let answer = call.send_following_redirects(prepared).await.expect("sent");
            assert_eq!(answer.status, 200, "{auth:?}");
            let sent = upstream.sent.lock().expect("sent").clone();
            let [(api_url, api_headers), (uploads_url, uploads_headers)] = sent.as_slice() else {
                panic!("{auth:?}: two hops, got {sent:?}");
            };
            match &expected_header {
                Some((name, value)) => {
                    assert_eq!(api_headers[*name], value.as_str(), "{auth:?}");
                    assert_eq!(api_url.query(), None, "{auth:?}");
                }
                None => assert_eq!(api_url.query(), Some("api_key=s3cret-token"), "{auth:?}"),
            }
            assert_eq!(
                uploads_url.as_str(),
                "https://uploads.example.com/file?a=1",
                "{auth:?}"
            );
            let leaked = uploads_headers.iter().any(|(_, value)| {
                value
                    .to_str()
                    .is_ok_and(|v| v.contains("s3cret") || v.contains(&encoded))
            });
            assert!(!leaked, "{auth:?}: {uploads_headers:?}");
            assert!(
                uploads_headers.get("authorization").is_none() && uploads_headers.get("x-api-key").is_none()
            );
        }
    }

    #[test]
    fn an_upstream_header_named_after_the_credential_is_dropped() {
        let call = call_state(AuthScheme::Bearer);
        let mut headers = HeaderMap::new();
        headers.insert("x-s3cret-token", HeaderValue::from_static("1"));
        headers.insert("x-echo", HeaderValue::from_static("Bearer s3cret-token"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let kept = scrubbed_headers(&headers, &call.secret_forms());
        let names: Vec<&str> = kept.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["x-echo", "content-type"]);
        assert!(!kept[0].value.contains("s3cret"), "{:?}", kept[0]);
        // In any case: names arrive in lower case whatever the credential's own case.
        let mut upper = call_state(AuthScheme::Bearer);
        upper.context.credential = Some(super::super::Credential::new("S3CRET-Mixed-Token"));
        let mut headers = HeaderMap::new();
        headers.insert("x-s3cret-mixed-token", HeaderValue::from_static("1"));
        assert!(scrubbed_headers(&headers, &upper.secret_forms()).is_empty());
    }

    #[test]
    fn a_connectors_error_text_is_scrubbed_of_the_credential() {
        let call = call_state(AuthScheme::Bearer);
        for error in [
            ConnectorError::Other("the token s3cret-token was refused".into()),
            ConnectorError::Upstream("Bearer s3cret-token".into()),
            ConnectorError::Http(HttpError::Transport("s3cret-token".into())),
        ] {
            let scrubbed = format!("{:?}", call.scrubbed_error(error));
            assert!(!scrubbed.contains("s3cret"), "{scrubbed}");
        }
        let plain = call.scrubbed_error(ConnectorError::BadParams("`owner` is missing".into()));
        assert!(matches!(plain, ConnectorError::BadParams(m) if m == "`owner` is missing"));
    }

    #[test]
    fn refused_requests_count_against_the_per_call_cap() {
        let mut call = call_state(AuthScheme::Bearer);
        let cap = RuntimeLimits::default().max_upstream_requests;
        for _ in 0..cap {
            let refused = call
                .prepare(request("https://elsewhere.example/x", &[]))
                .map(|_| ());
            let Err(refusal) = refused else {
                panic!("a host outside the allowlist is refused");
            };
            let told = call.refused_before_sending(refusal);
            assert!(matches!(told, HttpError::Denied(_)), "{told:?}");
        }
        let refusal = HttpError::Denied("again".into());
        let told = call.refused_before_sending(refusal);
        assert!(
            matches!(&told, HttpError::TooLarge(why) if why.contains("upstream requests in one call")),
            "{told:?}"
        );
        assert!(call.went_over_request_cap());
    }

    #[test]
    fn a_connector_sends_at_most_the_headers_its_limits_allow() {
        let call = call_state(AuthScheme::Bearer);
        let limits = RuntimeLimits::default();
        let many: Vec<(String, String)> = (0..=limits.max_request_headers)
            .map(|i| (format!("x-h{i}"), "v".to_owned()))
            .collect();
        fn as_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
        }
        let too_many = call.prepare(request("/x", &as_refs(&many)));
        assert!(
            matches!(&too_many, Err(HttpError::TooLarge(why)) if why.starts_with("more than")),
            "{too_many:?}"
        );
        assert!(
            call.prepare(request("/x", &as_refs(&many[1..]))).is_ok(),
            "exactly the most"
        );
        let big = vec![("x-big".to_owned(), "v".repeat(limits.max_header_bytes))];
        let too_big = call.prepare(request("/x", &as_refs(&big)));
        assert!(
            matches!(&too_big, Err(HttpError::TooLarge(why)) if why.starts_with("request headers larger")),
            "{too_big:?}"
        );
    }

    fn request(url: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            body: None,
        }
    }

    #[test]
    fn credential_goes_only_to_its_own_origin() {
        let call = call_state(AuthScheme::Bearer);
        let own = call.prepare(request("/repos", &[])).expect("prepared");
        assert_eq!(
            own.url.as_str(),
            "https://api.example.com/v3/repos",
            "paths join the base URL"
        );
        let (sent, with_credential) = call.finalize(&own).expect("finalized");
        assert!(with_credential);
        assert_eq!(sent.headers["authorization"], "Bearer s3cret-token");

        let other = call
            .prepare(request("https://uploads.example.com/x", &[]))
            .expect("prepared");
        let (sent, with_credential) = call.finalize(&other).expect("finalized");
        assert!(
            !with_credential,
            "another allowed origin never gets the credential"
        );
        assert!(sent.headers.get("authorization").is_none());
    }

    #[test]
    fn a_path_cannot_climb_out_of_the_base_urls_path() {
        let call = call_state(AuthScheme::Bearer);
        let dot_segments = [
            "/..",
            "/../admin",
            "/%2E%2E/%2e%2e/root",
            "/repos/%2E%2E/issues",
            "/a/./b",
            "/a/.%2e/b",
            "/a\\..\\..\\b",
            "/a/%2e",
            // What some upstream servers still read as `..`.
            "/..;/admin",
            "/a/..;x=1/b",
            "/..%2fadmin",
            "/..%2Fadmin",
            "/..%5cadmin",
            "/%2e%2e%2fadmin",
            "/a%2F..%2Fb",
        ];
        for path in dot_segments {
            let refused = call.prepare(request(path, &[]));
            assert!(
                matches!(refused, Err(HttpError::Denied(_))),
                "{path}: {refused:?}"
            );
        }
        for staying in [
            "/repos/a.b/..c/...",
            "?page=..",
            "/",
            "/projects/group%2Fproject",
            "/a;b/c..;d",
        ] {
            let raw = if staying.starts_with('?') {
                format!("/{staying}")
            } else {
                staying.to_owned()
            };
            let prepared = call.prepare(request(&raw, &[])).expect(staying);
            assert!(
                prepared.url.path().starts_with("/v3/"),
                "{staying}: {}",
                prepared.url
            );
        }
    }

    #[test]
    fn under_the_base_means_the_base_or_below_it() {
        let base = "https://api.example.com/v3";
        let under = |url: &str| stays_under(&Url::parse(url).expect("url"), base);
        assert!(under("https://api.example.com/v3") && under("https://api.example.com/v3/x"));
        assert!(under("https://api.example.com/v3?page=2"));
        assert!(!under("https://api.example.com/v30") && !under("https://api.example.com/x"));
    }

    #[test]
    fn query_and_header_credentials_cannot_be_shadowed_or_set_by_the_guest() {
        let call = call_state(AuthScheme::Query("api_key".into()));
        let refused = call.prepare(request("/x?api_key=guest&a=1", &[]));
        assert!(
            matches!(&refused, Err(HttpError::Denied(why)) if why == "query parameter `api_key` is set by the gateway"),
            "{refused:?}"
        );
        let prepared = call.prepare(request("/x?a=1", &[])).expect("prepared");
        let (sent, _) = call.finalize(&prepared).expect("finalized");
        assert_eq!(sent.url.query(), Some("a=1&api_key=s3cret-token"));
        // A redirect the upstream sends with the parameter in it cannot shadow it either.
        let mut hop = prepared.clone();
        hop.url = Url::parse("https://api.example.com/v3/y?api_key=upstream").expect("url");
        let (sent, _) = call.finalize(&hop).expect("finalized");
        assert_eq!(sent.url.query(), Some("api_key=s3cret-token"));

        let call = call_state(AuthScheme::Header(HeaderName::from_static("x-api-key")));
        let refused = call.prepare(request("/x", &[("X-Api-Key", "guest")]));
        assert!(matches!(refused, Err(HttpError::Denied(_))));
    }

    #[test]
    fn guest_requests_are_checked_before_anything_is_sent() {
        let call = call_state(AuthScheme::Bearer);
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("https://evil.example.net/", &[]),
            ("http://api.example.com/", &[]),
            ("https://user:pw@api.example.com/", &[]),
            ("file:///etc/passwd", &[]),
            ("/x", &[("host", "evil")]),
            ("/x", &[("cookie", "a=b")]),
            ("/x", &[("bad header", "v")]),
            ("/x", &[("x-ok", "line\r\nbreak")]),
        ];
        for (url, headers) in cases {
            assert!(call.prepare(request(url, headers)).is_err(), "{url} {headers:?}");
        }
        for method in ["CONNECT", "TRACE", "trace", "TRACK", "", &"X".repeat(1 << 20)] {
            let mut odd = request("/x", &[]);
            odd.method = method.to_owned();
            let refused = call.prepare(odd);
            assert!(
                matches!(&refused, Err(HttpError::Invalid(why)) if why.len() < 200),
                "{:?}",
                refused.map(|_| ())
            );
        }
        let mut lower = request("/x", &[]);
        lower.method = "post".into();
        assert_eq!(call.prepare(lower).expect("prepared").method, Method::POST);
    }

    #[test]
    fn redirects_resolve_relative_locations_and_refuse_odd_ones() {
        let current = Url::parse("https://api.example.com/a/b").expect("url");
        let response = |status: u16, location: &str| crate::upstream::UpstreamResponse {
            status,
            headers: [(
                http::header::LOCATION,
                HeaderValue::from_str(location).expect("value"),
            )]
            .into_iter()
            .collect(),
            body: Bytes::new(),
        };
        let next = redirect_target(&current, &response(302, "../c"))
            .expect("redirect")
            .expect("ok");
        assert_eq!(next.as_str(), "https://api.example.com/c");
        assert!(redirect_target(&current, &response(200, "/c")).is_none());
        assert!(matches!(
            redirect_target(&current, &response(301, "ftp://x/")),
            Some(Err(_))
        ));
        assert!(matches!(
            redirect_target(&current, &response(307, "https://u:p@x/")),
            Some(Err(_))
        ));
    }

    #[test]
    fn a_long_log_line_is_cut_before_it_is_scrubbed_and_no_secret_survives_the_cut() {
        let call = call_state(AuthScheme::Bearer);
        let longest_line = RuntimeLimits::default().max_log_line_bytes;
        let shown = |message: String| call.presentable(Cow::Owned(message));
        assert_eq!(shown("token s3cret-token here".into()), "token [REDACTED] here");
        // A line of long secrets shrinks as it is scrubbed, so the cut-off end of what was
        // looked at could show: a secret the cut split is never part of what shows.
        let mut call = call_state(AuthScheme::Bearer);
        let secret = format!("Zq{}", "9".repeat(58));
        call.context.credential = Some(super::super::Credential::new(secret.as_str()));
        for filler in 0..secret.len() {
            let line = format!("{}{}", "a".repeat(filler), secret.repeat(200));
            let presented = call.presentable(Cow::Owned(line));
            assert!(presented.contains("[REDACTED]"));
            assert!(!presented.contains("Zq"), "filler {filler}: {presented}");
        }
        // Megabytes of control characters are not escaped whole to show two kilobytes.
        let flood = shown("\u{1}".repeat(8 << 20));
        assert!(
            flood.len() <= longest_line + "…[truncated]".len(),
            "{}",
            flood.len()
        );
        assert!(flood.starts_with("\\u{1}"));
    }

    #[test]
    fn forbidden_headers_cover_credentials_framing_routing_coding_and_ranges() {
        for name in [
            "authorization",
            "proxy-authorization",
            "proxy-foo",
            "cookie",
            "host",
            "connection",
            "keep-alive",
            "transfer-encoding",
            "te",
            "trailer",
            "upgrade",
            "content-length",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-prefix",
            "accept-encoding",
            "range",
            "if-range",
        ] {
            assert!(is_forbidden_header(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["accept", "content-type", "if-none-match", "x-api-version"] {
            assert!(!is_forbidden_header(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn connector_log_lines_cannot_break_into_new_lines() {
        assert_eq!(
            escape_controls("done\n2026-11-29T00:00:00Z ERROR forged\r\u{1b}[31m".into()),
            "done\\n2026-11-29T00:00:00Z ERROR forged\\r\\u{1b}[31m"
        );
        assert_eq!(escape_controls("plain é".into()), "plain é");
    }
}
