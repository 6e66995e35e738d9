//! The transport behind the connectors' `http` capability: sends one already-vetted request.
//!
//! Policy (allowlist, headers, credentials) is decided in `runtime::capability`; this module
//! only moves bytes, with the address policy enforced at DNS resolution so that the addresses
//! checked are exactly the addresses dialled. Tests and benchmarks can swap in another
//! [`Upstream`] to answer in-process.

use crate::egress::AddressPolicy;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// A request body as the transport sends it: whole (a connector's request) or streamed
/// (passthrough).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Any error a request body's source may raise.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request ready to leave the gateway.
#[derive(Debug)]
pub struct UpstreamRequest {
    /// HTTP method.
    pub method: http::Method,
    /// Absolute URL, already allowed by policy.
    pub url: Url,
    /// Headers, credential included where due.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Option<Bytes>,
    /// Time allowed for the whole exchange.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
}

/// The upstream's answer.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Whole body (bounded by `max_response_bytes`).
    pub body: Bytes,
}

/// Why no response was delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The destination address is not permitted.
    #[error("{0}")]
    Denied(String),
    /// No answer in time.
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The response body exceeded the limit.
    #[error("the upstream response exceeded {0} bytes")]
    TooLarge(usize),
    /// Connection or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The upstream answered, in a form the gateway cannot pass on (not a failure to reach it:
    /// the request may have been acted on, so it is not one to retry blindly).
    #[error("{0}")]
    Unusable(String),
}

/// A response whose body is read as it arrives (passthrough of large bodies).
pub struct StreamingResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The body, chunk by chunk.
    pub body: futures::stream::BoxStream<'static, Result<Bytes, UpstreamError>>,
}

impl std::fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Sends vetted requests upstream.
pub trait Upstream: Send + Sync + 'static {
    /// Send `request` and read the whole response.
    fn send(&self, request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>>;

    /// Send `request` with `body` streamed, and return the response with its body streamed;
    /// `request.body` and `request.max_response_bytes` are ignored.
    fn send_streaming(
        &self,
        _request: UpstreamRequest,
        _body: Option<RequestBody>,
    ) -> BoxFuture<'_, Result<StreamingResponse, UpstreamError>> {
        Box::pin(async { Err(UpstreamError::Transport("this transport cannot stream".into())) })
    }
}

/// The production transport: a hyper client over rustls (HTTP/1.1, and HTTP/2 where the
/// upstream offers it), no automatic redirects, and a resolver that refuses non-permitted
/// addresses.
///
/// hyper rather than a higher-level client because this is the gateway's hot path and every
/// policy a higher-level client adds (redirects, proxies, cookies, decompression) is either
/// decided by the capability or unwanted here.
///
/// Each thread gets its own client and so its own connection pool. A pooled connection is
/// driven by a task on the runtime that opened it; with one client per serving thread (see
/// [`crate::server`]) a request and its upstream connection stay on the same thread.
pub struct HttpUpstream {
    connector: HttpsConnector,
    clients: thread_local::ThreadLocal<Client>,
    connect_timeout: Duration,
}

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector<PolicyResolver>>;
type Client = hyper_util::client::legacy::Client<HttpsConnector, RequestBody>;

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUpstream").finish_non_exhaustive()
    }
}

/// Longest wait for a TCP connection to an upstream (within the exchange's own deadline).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sent when the connector set none: some APIs refuse requests without them.
const DEFAULT_USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));
const DEFAULT_ACCEPT: &str = "*/*";

/// Longest upstream host (and port) written to the log: a DNS name has at most 253 bytes.
const LOGGED_AUTHORITY_BYTES: usize = 260;

impl HttpUpstream {
    /// A transport whose DNS answers are filtered through `policy`, trusting the Web PKI roots.
    pub fn new(policy: AddressPolicy) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::with_roots(policy, roots)
    }

    /// A transport trusting exactly `roots` (a private CA: tests, or upstreams signed in-house).
    pub fn with_roots(policy: AddressPolicy, roots: rustls::RootCertStore) -> anyhow::Result<Self> {
        Self::build(policy, roots, CONNECT_TIMEOUT)
    }

    fn build(
        policy: AddressPolicy,
        roots: rustls::RootCertStore,
        connect_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new_with_resolver(PolicyResolver { policy });
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        // Pooled connections an idle NAT or load balancer dropped are noticed, not waited on.
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        Ok(Self {
            connector,
            clients: thread_local::ThreadLocal::new(),
            connect_timeout,
        })
    }

    /// This thread's client.
    fn client(&self) -> &Client {
        self.clients.get_or(|| {
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_timer(TokioTimer::new())
                .build(self.connector.clone())
        })
    }

    /// Send `request` with `body`, giving up at `deadline`; the response body is left to read.
    async fn exchange(
        &self,
        request: UpstreamRequest,
        body: RequestBody,
        deadline: Instant,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        let timeout = request.timeout;
        let uri: http::Uri = request
            .url
            .as_str()
            .parse()
            .map_err(|_| UpstreamError::Transport("the upstream URL cannot be sent".into()))?;
        let mut outgoing = http::Request::new(body);
        *outgoing.method_mut() = request.method;
        *outgoing.uri_mut() = uri;
        *outgoing.headers_mut() = request.headers;
        let headers = outgoing.headers_mut();
        if !headers.contains_key(http::header::USER_AGENT) {
            headers.insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(DEFAULT_USER_AGENT),
            );
        }
        if !headers.contains_key(http::header::ACCEPT) {
            headers.insert(
                http::header::ACCEPT,
                http::HeaderValue::from_static(DEFAULT_ACCEPT),
            );
        }
        // Bodies come back in plain bytes, which is how the credential can be scrubbed from
        // them (an absent header would allow any coding; neither connectors nor passthrough
        // callers may set one).
        headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
        // For the log line of a failure (a reference-counted copy, not a new string).
        let authority = outgoing.uri().authority().cloned();
        let response = match tokio::time::timeout_at(deadline, self.client().request(outgoing)).await {
            Err(_) => return Err(UpstreamError::Timeout(timeout)),
            Ok(result) => result.map_err(|error| classify(error, authority, self.connect_timeout))?,
        };
        refuse_encoded_body(response.headers())?;
        Ok(response)
    }
}

/// An upstream that encodes its body although asked not to (some echo services always
/// compress) is refused: the credential could not be scrubbed from the encoded bytes, and a
/// connector could decode them.
fn refuse_encoded_body(headers: &http::HeaderMap) -> Result<(), UpstreamError> {
    let encodings = headers.get_all(http::header::CONTENT_ENCODING);
    // Empty list elements do not count (RFC 9110 §5.6.1).
    let encoded = encodings.iter().any(|value| {
        value.to_str().map_or(true, |text| {
            text.split(',')
                .map(str::trim)
                .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
        })
    });
    if encoded {
        return Err(UpstreamError::Unusable(
            "the upstream sent an encoded body (Content-Encoding) although the gateway asked for none; \
             it is refused, as the credential could not be scrubbed from it"
                .into(),
        ));
    }
    Ok(())
}

impl Upstream for HttpUpstream {
    fn send(&self, mut request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async move {
            let timeout = request.timeout;
            let limit = request.max_response_bytes;
            let deadline = Instant::now() + timeout;
            let body = match request.body.take() {
                Some(bytes) => Full::new(bytes).map_err(|never| match never {}).boxed_unsync(),
                None => empty_body(),
            };
            let response = self.exchange(request, body, deadline).await?;
            let (parts, mut incoming) = response.into_parts();
            // The body's own length, not the header: a HEAD, 204 or 304 answer may declare the
            // length of a body it does not carry.
            let declared = http_body::Body::size_hint(&incoming).exact();
            if declared.is_some_and(|len| len > limit as u64) {
                return Err(UpstreamError::TooLarge(limit));
            }
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = next_chunk(&mut incoming, deadline, timeout).await? {
                if body.len() + chunk.len() > limit {
                    return Err(UpstreamError::TooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(UpstreamResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: body.freeze(),
            })
        })
    }

    fn send_streaming(
        &self,
        request: UpstreamRequest,
        body: Option<RequestBody>,
    ) -> BoxFuture<'_, Result<StreamingResponse, UpstreamError>> {
        Box::pin(async move {
            let timeout = request.timeout;
            let deadline = Instant::now() + timeout;
            let response = self
                .exchange(request, body.unwrap_or_else(empty_body), deadline)
                .await?;
            let (parts, incoming) = response.into_parts();
            // The deadline covers the whole exchange, body included, as for `send`.
            let body = futures::stream::unfold(Some(incoming), move |state| async move {
                let mut incoming = state?;
                match next_chunk(&mut incoming, deadline, timeout).await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(incoming))),
                    Ok(None) => None,
                    Err(error) => Some((Err(error), None)),
                }
            });
            Ok(StreamingResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: futures::StreamExt::boxed(body),
            })
        })
    }
}

/// Wrap a stream of chunks as a request body. With `length` (the caller's `Content-Length`),
/// the upstream gets that `Content-Length` instead of a chunked body, which many APIs refuse
/// for uploads; a stream that ends short or runs long then fails the exchange.
pub fn streamed_body<S, E>(chunks: S, length: Option<u64>) -> RequestBody
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    let frames = futures::TryStreamExt::map_ok(
        futures::TryStreamExt::map_err(chunks, Into::into),
        http_body::Frame::data,
    );
    let body = http_body_util::StreamBody::new(frames).boxed_unsync();
    match length {
        Some(length) => KnownLength { inner: body, length }.boxed_unsync(),
        None => body,
    }
}

/// A streamed body whose length was declared up front: its size hint is exact, so the client
/// frames it with `Content-Length`.
struct KnownLength {
    inner: RequestBody,
    length: u64,
}

impl http_body::Body for KnownLength {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.length)
    }
}

fn empty_body() -> RequestBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The next chunk of a response body, `None` at its end, or why it failed; the exchange's
/// `deadline` (its whole `timeout`) covers the body too.
async fn next_chunk(
    incoming: &mut hyper::body::Incoming,
    deadline: Instant,
    timeout: Duration,
) -> Result<Option<Bytes>, UpstreamError> {
    loop {
        let frame = match tokio::time::timeout_at(deadline, incoming.frame()).await {
            Err(_) => return Err(UpstreamError::Timeout(timeout)),
            Ok(None) => return Ok(None),
            Ok(Some(frame)) => {
                frame.map_err(|_| UpstreamError::Transport("the upstream response body failed".into()))?
            }
        };
        // Trailers carry nothing the caller receives.
        if let Ok(chunk) = frame.into_data() {
            return Ok(Some(chunk));
        }
    }
}

/// Map a client failure to a typed error, surfacing the resolver's refusal as `Denied` and a
/// connect timeout as `Timeout`.
fn classify(
    error: hyper_util::client::legacy::Error,
    upstream: Option<http::uri::Authority>,
    connect_timeout: Duration,
) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(err) = source {
        if let Some(denied) = err.downcast_ref::<AddressDenied>() {
            return UpstreamError::Denied(denied.to_string());
        }
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return UpstreamError::Timeout(connect_timeout);
        }
        source = err.source();
    }
    // The guest and the caller get a fixed text; the operator gets the cause (refused, reset,
    // DNS, TLS…) in the log, under the request's transaction key.
    let cause = std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    // Bounded: a connector may make up a host name of kilobytes (one failing DNS at once).
    let upstream = crate::error::cut_to(
        upstream
            .as_ref()
            .map_or("", http::uri::Authority::as_str)
            .to_owned(),
        LOGGED_AUTHORITY_BYTES,
    );
    let cause = crate::error::cut_to(cause, LOGGED_AUTHORITY_BYTES * 2);
    tracing::warn!(%upstream, %cause, "upstream exchange failed");
    if error.is_connect() {
        return UpstreamError::Transport("could not connect to the upstream".into());
    }
    UpstreamError::Transport("the upstream exchange failed".into())
}

/// Raised by the resolver when every address of a name is refused.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to addresses the gateway may not connect to ({why})")]
struct AddressDenied {
    host: String,
    /// Why the first address was refused.
    why: &'static str,
}

/// Resolves names with the system resolver, then keeps only addresses `policy` permits.
/// The connector dials exactly the addresses returned, so there is no second lookup to rebind.
/// (An IP-literal URL skips resolution; the capability checks those before sending.)
#[derive(Debug, Clone, Copy)]
struct PolicyResolver {
    policy: AddressPolicy,
}

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| policy.permits(addr.ip()))
                .collect();
            if permitted.is_empty() {
                // The reason an operator can act on first: a private address needs only a flag.
                let why = resolved
                    .iter()
                    .min_by_key(|addr| {
                        crate::egress::classify(addr.ip()) != crate::egress::AddressClass::Private
                    })
                    .and_then(|addr| policy.refusal(addr.ip()))
                    .unwrap_or("it resolves to no address");
                return Err(Box::new(AddressDenied { host, why }) as BoxError);
            }
            Ok(permitted.into_iter())
        })
    }
}

#[cfg(test)]
mod tests;
