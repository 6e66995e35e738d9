//! The transport behind the connectors' `http` capability: sends one already-vetted request.
//!
//! Policy (allowlist, headers, credentials) is decided in `runtime::capability`; this module
//! only moves bytes, with the address policy enforced at DNS resolution so that the addresses
//! checked are exactly the addresses dialled. Tests and benchmarks can swap in another
//! [`Upstream`] to answer in-process.

use crate::egress::AddressPolicy;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

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
        _body: Option<reqwest::Body>,
    ) -> BoxFuture<'_, Result<StreamingResponse, UpstreamError>> {
        Box::pin(async { Err(UpstreamError::Transport("this transport cannot stream".into())) })
    }
}

/// The production transport: reqwest with no automatic redirects and a resolver that refuses
/// non-permitted addresses.
///
/// Each thread gets its own client and so its own connection pool. A pooled connection is
/// driven by a task on the runtime that opened it; with one client per serving thread (see
/// [`crate::server`]) a request and its upstream connection stay on the same thread.
#[derive(Debug)]
pub struct HttpUpstream {
    policy: AddressPolicy,
    clients: thread_local::ThreadLocal<reqwest::Client>,
}

impl HttpUpstream {
    /// A transport whose DNS answers are filtered through `policy`.
    pub fn new(policy: AddressPolicy) -> anyhow::Result<Self> {
        let upstream = Self {
            policy,
            clients: thread_local::ThreadLocal::new(),
        };
        // Fail at start, not on the first request, if the client cannot be built.
        upstream.client()?;
        Ok(upstream)
    }

    /// This thread's client.
    fn client(&self) -> reqwest::Result<&reqwest::Client> {
        self.clients.get_or_try(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(Arc::new(PolicyResolver { policy: self.policy }))
                .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(60))
                .build()
        })
    }
}

impl Upstream for HttpUpstream {
    fn send_streaming(
        &self,
        request: UpstreamRequest,
        body: Option<reqwest::Body>,
    ) -> BoxFuture<'_, Result<StreamingResponse, UpstreamError>> {
        self.stream(request, body)
    }

    fn send(&self, request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async move {
            let timeout = request.timeout;
            let limit = request.max_response_bytes;
            let client = self.client().map_err(|e| classify(e, timeout))?;
            let mut builder = client
                .request(request.method, request.url)
                .headers(request.headers)
                .timeout(timeout);
            if let Some(body) = request.body {
                builder = builder.body(body);
            }
            let mut response = builder.send().await.map_err(|e| classify(e, timeout))?;
            if response.content_length().is_some_and(|len| len > limit as u64) {
                return Err(UpstreamError::TooLarge(limit));
            }
            let status = response.status().as_u16();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| classify(e, timeout))? {
                if body.len() + chunk.len() > limit {
                    return Err(UpstreamError::TooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(UpstreamResponse {
                status,
                headers,
                body: Bytes::from(body),
            })
        })
    }
}

impl HttpUpstream {
    fn stream(
        &self,
        request: UpstreamRequest,
        body: Option<reqwest::Body>,
    ) -> BoxFuture<'_, Result<StreamingResponse, UpstreamError>> {
        Box::pin(async move {
            let timeout = request.timeout;
            let client = self.client().map_err(|e| classify(e, timeout))?;
            let mut builder = client
                .request(request.method, request.url)
                .headers(request.headers)
                .timeout(timeout);
            if let Some(body) = body {
                builder = builder.body(body);
            }
            let mut response = builder.send().await.map_err(|e| classify(e, timeout))?;
            let status = response.status().as_u16();
            let headers = std::mem::take(response.headers_mut());
            let body = futures::StreamExt::boxed(futures::TryStreamExt::map_err(
                response.bytes_stream(),
                move |e| classify(e, timeout),
            ));
            Ok(StreamingResponse {
                status,
                headers,
                body,
            })
        })
    }
}

/// Map a reqwest failure to a typed error, surfacing the resolver's refusal as `Denied`.
fn classify(error: reqwest::Error, timeout: Duration) -> UpstreamError {
    if error.is_timeout() {
        return UpstreamError::Timeout(timeout);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(err) = source {
        if let Some(denied) = err.downcast_ref::<AddressDenied>() {
            return UpstreamError::Denied(denied.to_string());
        }
        source = err.source();
    }
    if error.is_connect() {
        return UpstreamError::Transport("could not connect to the upstream".into());
    }
    UpstreamError::Transport("the upstream exchange failed".into())
}

/// Raised by the resolver when every address of a name is refused.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to addresses the gateway may not connect to")]
struct AddressDenied {
    host: String,
}

/// Resolves names with the system resolver, then keeps only addresses `policy` permits.
/// reqwest connects to exactly the addresses returned, so there is no second lookup to rebind.
#[derive(Debug)]
struct PolicyResolver {
    policy: AddressPolicy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let permitted: Vec<SocketAddr> = resolved.filter(|addr| policy.permits(addr.ip())).collect();
            if permitted.is_empty() {
                return Err(Box::new(AddressDenied { host }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
