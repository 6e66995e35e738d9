//! The transport against real servers on loopback: TLS with protocol negotiation, deadlines,
//! size limits, default headers and the address policy.

use super::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECOND: Duration = Duration::from_secs(1);

fn request(url: &str, timeout: Duration) -> UpstreamRequest {
    UpstreamRequest {
        method: http::Method::GET,
        url: Url::parse(url).expect("url"),
        headers: http::HeaderMap::new(),
        body: None,
        timeout,
        max_response_bytes: 1 << 20,
    }
}

/// Answers every request with its protocol version, then its `user-agent`, `accept`,
/// `accept-encoding` and body, one per line.
async fn describe(request: http::Request<Incoming>) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .map(|value: &http::HeaderValue| value.to_str().unwrap_or("?").to_owned())
            .unwrap_or_default()
    };
    let head = format!(
        "{:?}\n{}\n{}\n{}\n",
        request.version(),
        header(http::header::USER_AGENT),
        header(http::header::ACCEPT),
        header(http::header::ACCEPT_ENCODING)
    );
    let body = request.into_body().collect().await?.to_bytes();
    Ok(http::Response::new(Full::new(Bytes::from(
        [head.as_bytes(), &body].concat(),
    ))))
}

/// Serves [`describe`] over HTTP/1.1 or HTTP/2, in TLS if `tls` is given (HTTP/2 only where
/// ALPN chose it).
async fn describing_upstream(tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(describe);
                let Some(tls) = tls else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                    return;
                };
                let Ok(stream) = tls.accept(tcp).await else { return };
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            });
        }
    });
    port
}

/// A certificate for `localhost`, and a TLS acceptor offering `protocols` with it.
fn localhost_tls(
    protocols: &[&[u8]],
) -> (
    rustls::pki_types::CertificateDer<'static>,
    tokio_rustls::TlsAcceptor,
) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let certificate = issued.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(issued.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .expect("server config");
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    (certificate, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn trusting(certificate: rustls::pki_types::CertificateDer<'static>) -> HttpUpstream {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).expect("root");
    HttpUpstream::with_roots(AddressPolicy::AllowPrivate, roots).expect("transport")
}

fn lines(response: &UpstreamResponse) -> Vec<String> {
    String::from_utf8_lossy(&response.body)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn https_upstreams_are_spoken_to_in_http2_only_when_they_offer_it() {
    let offers: [(&[&[u8]], &str); 2] = [(&[b"h2", b"http/1.1"], "HTTP/2.0"), (&[b"http/1.1"], "HTTP/1.1")];
    for (protocols, spoken) in offers {
        let (certificate, acceptor) = localhost_tls(protocols);
        let port = describing_upstream(Some(acceptor)).await;
        let response = trusting(certificate)
            .send(request(&format!("https://localhost:{port}/"), SECOND))
            .await
            .expect("response");
        assert_eq!(response.status, 200);
        assert_eq!(lines(&response)[0], spoken);
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let (_, acceptor) = localhost_tls(&[b"http/1.1"]);
    let port = describing_upstream(Some(acceptor)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(localhost_tls(&[]).0).expect("another root");
    let upstream = HttpUpstream::with_roots(AddressPolicy::AllowPrivate, roots).expect("transport");
    let error = upstream
        .send(request(&format!("https://localhost:{port}/"), SECOND))
        .await
        .expect_err("refused");
    assert_eq!(
        error,
        UpstreamError::Transport("could not connect to the upstream".into())
    );
}

#[tokio::test]
async fn user_agent_and_accept_default_and_bodies_are_always_asked_for_plain() {
    let port = describing_upstream(None).await;
    let upstream = HttpUpstream::new(AddressPolicy::AllowPrivate).expect("transport");
    let url = format!("http://127.0.0.1:{port}/");
    let defaulted = upstream.send(request(&url, SECOND)).await.expect("response");
    assert_eq!(
        lines(&defaulted)[1..],
        [DEFAULT_USER_AGENT, DEFAULT_ACCEPT, "identity"],
        "bodies are asked for in plain bytes, so they can be scrubbed"
    );

    let mut own = request(&url, SECOND);
    own.headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("connector/2"),
    );
    own.headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    own.headers.insert(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("gzip"),
    );
    let kept = upstream.send(own).await.expect("response");
    assert_eq!(lines(&kept)[1..], ["connector/2", "application/json", "identity"]);
}

#[tokio::test]
async fn request_bodies_arrive_whole_or_streamed() {
    let port = describing_upstream(None).await;
    let upstream = HttpUpstream::new(AddressPolicy::AllowPrivate).expect("transport");
    let url = format!("http://127.0.0.1:{port}/");
    let mut whole = request(&url, SECOND);
    whole.method = http::Method::POST;
    whole.body = Some(Bytes::from_static(b"whole body"));
    assert_eq!(
        lines(&upstream.send(whole).await.expect("response"))[4],
        "whole body"
    );

    let chunks =
        futures::stream::iter(["streamed ", "in ", "three"].map(|c| Ok::<_, BoxError>(Bytes::from(c))));
    let mut streamed = request(&url, SECOND);
    streamed.method = http::Method::POST;
    let response = upstream
        .send_streaming(streamed, Some(streamed_body(chunks, None)))
        .await
        .expect("response");
    let body: Vec<Bytes> = futures::TryStreamExt::try_collect(response.body)
        .await
        .expect("body");
    assert!(body.concat().ends_with(b"\nstreamed in three"), "{body:?}");
}

/// A server that answers one request per connection with `reply` and then holds the connection
/// open, silent.
async fn raw_upstream(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Requests here are one small bodiless head: one read takes it.
                let mut head = [0u8; 4096];
                let _ = tcp.read(&mut head).await;
                let _ = tcp.write_all(reply).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_silent_upstream_times_out() {
    let port = raw_upstream(b"").await;
    let upstream = HttpUpstream::new(AddressPolicy::AllowPrivate).expect("transport");
    let timeout = Duration::from_millis(200);
    let error = upstream
        .send(request(&format!("http://127.0.0.1:{port}/"), timeout))
        .await
        .expect_err("timed out");
    assert_eq!(error, UpstreamError::Timeout(timeout));
}

#[tokio::test]
async fn an_upstream_that_never_completes_the_connection_is_a_connect_timeout() {
    // A listener whose accept queue is full drops further connection attempts (SYNs) on
    // Linux, so a connect to it neither completes nor fails: only the timeout ends it.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener = socket.listen(1).expect("listen");
    let address = listener.local_addr().expect("addr");
    let mut queued = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            Ok(Ok(connection)) => queued.push(connection),
            _ => break,
        }
    }
    assert!(queued.len() < 16, "the accept queue never filled");

    let connect_timeout = Duration::from_millis(300);
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let upstream =
        HttpUpstream::build(AddressPolicy::AllowPrivate, roots, connect_timeout).expect("transport");
    let error = upstream
        .send(request(&format!("http://{address}/"), Duration::from_secs(10)))
        .await
        .expect_err("never connected");
    assert_eq!(
        error,
        UpstreamError::Timeout(connect_timeout),
        "the connect timeout, not the exchange's"
    );
    drop(listener);
}

#[tokio::test]
async fn the_deadline_covers_the_body_too() {
    let port = raw_upstream(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n").await;
    let upstream = HttpUpstream::new(AddressPolicy::AllowPrivate).expect("transport");
    let url = format!("http://127.0.0.1:{port}/");
    let timeout = Duration::from_millis(200);
    assert_eq!(
        upstream
            .send(request(&url, timeout))
            .await
            .expect_err("timed out"),
        UpstreamError::Timeout(timeout)
    );

    let response = upstream
        .send_streaming(request(&url, timeout), None)
        .await
        .expect("headers arrive in time");
    let chunks: Vec<_> = futures::StreamExt::collect(response.body).await;
    assert_eq!(
        chunks,
        [
            Ok(Bytes::from_static(b"hello")),
            Err(UpstreamError::Timeout(timeout))
        ]
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_whether_declared_or_not() {
    let declared = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n").await;
    let chunked =
        raw_upstream(b"HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n").await;
    let upstream = HttpUpstream::new(AddressPolicy::AllowPrivate).expect("transport");
    for port in [declared, chunked] {
        let mut limited = request(&format!("http://127.0.0.1:{port}/"), SECOND);
        limited.max_response_bytes = 5;
        assert_eq!(
            upstream.send(limited).await.expect_err("too large"),
            UpstreamError::TooLarge(5)
        );
    }
    // A HEAD answer declares the length of a body it does not carry.
    let mut head = request(&format!("http://127.0.0.1:{declared}/"), SECOND);
    head.method = http::Method::HEAD;
    head.max_response_bytes = 5;
    let answered = upstream.send(head).await.expect("a HEAD answer has no body");
    assert_eq!((answered.status, answered.body.len()), (200, 0));

    let mut enough = request(&format!("http://127.0.0.1:{chunked}/"), SECOND);
    enough.max_response_bytes = 6;
    assert_eq!(
        upstream.send(enough).await.expect("fits").body,
        Bytes::from_static(b"abcdef")
    );
}

#[tokio::test]
async fn a_name_resolving_only_to_refused_addresses_is_denied() {
    let port = describing_upstream(None).await;
    let upstream = HttpUpstream::new(AddressPolicy::PublicOnly).expect("transport");
    let error = upstream
        .send(request(&format!("http://localhost:{port}/"), SECOND))
        .await
        .expect_err("denied");
    assert!(
        matches!(&error, UpstreamError::Denied(message)
            if message.contains("localhost") && message.contains("--allow-private-upstreams")),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_encoded_body_is_refused_as_it_could_not_be_scrubbed() {
    let upstream = HttpUpstream::new(AddressPolicy::AllowPrivate).expect("transport");
    let timeout = Duration::from_secs(5);
    for reply in [
        &b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 3\r\n\r\nabc"[..],
        b"HTTP/1.1 200 OK\r\ncontent-encoding: identity, br\r\ncontent-length: 3\r\n\r\nabc",
    ] {
        // One upstream each: the fake answers one request per connection.
        let url = |port: u16| format!("http://127.0.0.1:{port}/");
        let whole = upstream
            .send(request(&url(raw_upstream(reply).await), timeout))
            .await
            .expect_err("refused");
        let streamed = upstream
            .send_streaming(request(&url(raw_upstream(reply).await), timeout), None)
            .await
            .expect_err("refused");
        for error in [whole, streamed] {
            assert!(
                matches!(&error, UpstreamError::Unusable(why) if why.contains("encoded body")),
                "{error:?}"
            );
        }
    }
    let port =
        raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-encoding: identity, ,\r\ncontent-length: 3\r\n\r\nabc")
            .await;
    let plain = upstream
        .send(request(&format!("http://127.0.0.1:{port}/"), timeout))
        .await
        .expect("identity is no encoding");
    assert_eq!(plain.body, Bytes::from_static(b"abc"));
}
