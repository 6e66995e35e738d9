//! What every end-to-end test needs: a gateway with the test connectors, a key, a GitHub
//! connection pointing at a fake GitHub, and a client.

use serde_json::{Value, json};
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{FakeUpstream, Gateway, Recorded, Reply, guests};
use std::time::Duration;

/// The binary under test.
pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// The GitHub token stored in the test connection; it must never show up anywhere else.
pub const SECRET: &str = "ghp_e2eSECRETtoken0123456789";

/// Upper bound for any single request in a test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a test waits for the gateway's background work (the request-log writer, health
/// updates, reloads) to show: CI runs the suite on two loaded cores. Polling stops as soon as
/// the work shows, so a passing test does not wait for it.
pub const BACKGROUND_WORK: Duration = Duration::from_secs(20);

/// A gateway, a fake GitHub, an API key with `*` scope and a connection to the fake.
pub struct Setup {
    pub gateway: Gateway,
    pub upstream: FakeUpstream,
    pub key: String,
    pub connection_key: String,
    pub client: reqwest::Client,
}

/// A reply from the gateway.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `error` code of an error reply.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("<no error code>")
    }
}

/// Answers like GitHub's REST API for the `acme/webapp` repository.
pub fn fake_github(request: &Recorded) -> Reply {
    let path = request.path.as_str();
    match (request.method.as_str(), path) {
        ("GET", "/repos/acme/webapp") => Reply::json(
            200,
            json!({"id": 1296269, "full_name": "acme/webapp", "private": false, "default_branch": "main"}),
        ),
        ("GET", "/repos/acme/webapp/issues") => {
            let mut reply = Reply::json(200, json!([{"number": 7, "title": "Bug", "state": "open"}]));
            for (rel, page) in [("next", 2), ("last", 4)] {
                let link = format!(
                    "<https://api.github.com/repositories/1296269/issues?page={page}>; rel=\"{rel}\""
                );
                reply.headers.push(("link".into(), link));
            }
            reply
        }
        ("GET", "/repos/acme/webapp/issues/7") => {
            Reply::json(200, json!({"number": 7, "title": "Bug", "state": "open"}))
        }
        ("POST", "/repos/acme/webapp/issues") => {
            let body = request.json();
            if body["title"].as_str().is_some_and(|t| t.trim().is_empty()) {
                Reply::json(
                    422,
                    json!({"message": "Validation Failed", "errors": [{"field": "title", "code": "missing_field"}]}),
                )
            } else {
                Reply::json(201, json!({"number": 8, "title": body["title"], "state": "open"}))
            }
        }
        ("POST", "/repos/acme/webapp/issues/7/comments") => {
            Reply::json(201, json!({"id": 99, "body": request.json()["body"]}))
        }
        ("GET", "/echo-headers") => {
            let auth = request.header("authorization").unwrap_or_default().to_owned();
            let mut reply = Reply::json(200, json!({"you_sent": auth}));
            reply.headers.push(("x-echo-authorization".into(), auth));
            reply
        }
        // Waits without holding a thread of the test's runtime: a test can keep time meanwhile.
        ("GET", "/slow") => Reply::json(200, json!({"slow": true})).after(Duration::from_millis(1500)),
        // For a test that must do several things while a call is in flight, on a loaded machine.
        ("GET", "/slower") => Reply::json(200, json!({"slow": true})).after(Duration::from_secs(6)),
        ("GET", "/text") => Reply::text(200, "plain words"),
        ("GET", "/repos/acme/broken") => Reply {
            headers: vec![("content-type".into(), "application/json".into())],
            ..Reply::text(200, "{not json")
        },
        // An answer compressed although the gateway asks for none (a credential echoed in it
        // would pass the scrubber unseen).
        ("GET", "/repos/acme/gzipped") => Reply {
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("content-encoding".into(), "gzip".into()),
            ],
            body: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3],
            ..Reply::text(200, "")
        },
        ("GET", "/repos/acme/slow") => {
            Reply::json(200, json!({"slow": true})).after(Duration::from_millis(1500))
        }
        // A repository answer that is no text at all (every byte value once).
        ("GET", "/repos/acme/binary") => Reply {
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body: (0..=255).collect(),
            ..Reply::text(200, "")
        },
        ("GET", "/teapot") => Reply::text(418, "short and stout"),
        ("GET", "/big") => Reply::text(200, &big_body()),
        ("GET", "/sized") => Reply::text(200, &"s".repeat(SIZED_BODY_BYTES)),
        ("PUT", "/upload") => Reply::json(200, json!({"received": request.body.len()})),
        ("GET", "/redirect-same") => redirect("/echo-headers"),
        ("GET", "/redirect-loop") => redirect("/redirect-loop"),
        ("GET", "/redirect-away") => {
            // The target comes in the query: `?to=<percent-encoded url>`.
            let to = request
                .query
                .as_deref()
                .and_then(|q| q.strip_prefix("to="))
                .unwrap_or("/");
            redirect(&percent_encoding::percent_decode_str(to).decode_utf8_lossy())
        }
        // GitHub's primary rate limit on a repository read, with what a caller needs to wait
        // (and a cookie and caching header it does not need).
        ("GET", "/repos/acme/busy") => {
            let mut reply = Reply::json(403, json!({"message": "API rate limit exceeded"}));
            for (name, value) in [
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1764547200"),
                ("retry-after", "60"),
                ("x-github-request-id", "C0DE:BEEF"),
                ("set-cookie", "logged_in=no"),
                ("cache-control", "no-store"),
            ] {
                reply.headers.push((name.into(), value.into()));
            }
            reply
        }
        // A repository answer of 1.5 MiB.
        ("GET", "/repos/acme/large") => Reply::json(200, json!({"blob": "b".repeat(3 << 19)})),
        // A request id that echoes the request's authorization (an upstream logging it).
        ("GET", "/repos/acme/echoing") => {
            let mut reply = Reply::json(200, json!({"id": 1}));
            let echoed = format!("req-{}", request.header("authorization").unwrap_or_default());
            reply.headers.push(("x-request-id".into(), echoed));
            reply
        }
        ("GET", "/repos/acme/revoked") => Reply::json(401, json!({"message": "Bad credentials"})),
        // GitHub's secondary rate limit, with its own `x-ratelimit-*` headers.
        ("GET", "/rate-limited") => {
            let mut reply = Reply::json(
                429,
                json!({"message": "You have exceeded a secondary rate limit"}),
            );
            for (name, value) in [
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "42"),
                ("retry-after", "7"),
            ] {
                reply.headers.push((name.into(), value.into()));
            }
            reply
        }
        _ => Reply::json(404, json!({"message": "Not Found"})),
    }
}

/// Length of `GET /sized`'s body: many chunks, none of them the secret.
pub const SIZED_BODY_BYTES: usize = 3 << 20;

/// 40 MiB with the secret every ~1 KiB: more than any buffered path would take.
pub fn big_body() -> String {
    let unit = format!("{}{SECRET}", "x".repeat(1000));
    unit.repeat((40 << 20) / unit.len())
}

fn redirect(location: &str) -> Reply {
    let mut reply = Reply::text(302, "");
    reply.headers.push(("location".into(), location.into()));
    reply
}

impl Setup {
    /// A gateway with the GitHub, echo and hostile connectors and default options.
    pub async fn new() -> Self {
        Self::with_options(Options::default()).await
    }

    /// Same, with gateway options.
    pub async fn with_options(options: Options) -> Self {
        let upstream = FakeUpstream::start(fake_github).await;
        let gateway = Gateway::start(
            std::path::Path::new(SLUICE),
            &[guests::GITHUB, guests::ECHO, guests::HOSTILE],
            options,
        )
        .await;
        let key = gateway.create_key("test", "*").await;
        let base_url = upstream.url();
        let connection_key = gateway
            .add_connection("github", SECRET, &["--base-url", &base_url])
            .await;
        gateway
            .add_connection("hostile", SECRET, &["--base-url", &base_url])
            .await;
        Self {
            gateway,
            upstream,
            key,
            connection_key,
            client: reqwest::Client::new(),
        }
    }

    /// `POST /v1/{integration}/{endpoint}` with `body` and this setup's key.
    pub async fn execute(&self, integration: &str, endpoint: &str, body: Value) -> Answer {
        self.execute_as(&self.key, integration, endpoint, body).await
    }

    /// The same with another key.
    pub async fn execute_as(&self, key: &str, integration: &str, endpoint: &str, body: Value) -> Answer {
        let request = self
            .client
            .post(format!("{}/v1/{integration}/{endpoint}", self.gateway.url))
            .bearer_auth(key)
            .json(&body);
        send(request).await
    }

    /// `github/get_repo` for `acme/webapp` with this setup's key: the call most tests make.
    pub async fn get_repo(&self) -> Answer {
        let params = json!({"params": {"owner": "acme", "repo": "webapp"}});
        self.execute("github", "get_repo", params).await
    }

    /// `GET /v1/passthrough{path}` on this setup's GitHub connection, with its key.
    pub async fn passthrough_get(&self, path: &str) -> Answer {
        let request = self
            .client
            .get(format!("{}/v1/passthrough{path}", self.gateway.url))
            .bearer_auth(&self.key)
            .header("x-sluice-connection-key", &self.connection_key);
        send(request).await
    }

    /// Call any gateway route with this setup's key.
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        self.api_as(&self.key, method, path, body).await
    }

    /// Call any gateway route with `key`.
    pub async fn api_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.gateway.url))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    /// Once the gateway's metrics hold `line` (a whole line, e.g. `sluice_instances_in_use 1`):
    /// for a test that must act while a call holds an instance.
    pub async fn wait_for_metric(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + BACKGROUND_WORK;
        loop {
            let metrics = self.gateway.metrics().await;
            if metrics.lines().any(|held| held == line) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no metrics line `{line}`:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The connection's `state` once it is `wanted`, or the last one seen. State updates
    /// happen off the response path, so this polls (bounded).
    pub async fn wait_for_state(&self, connection_key: &str, wanted: &str) -> String {
        let path = format!("/v1/vault/connections/{connection_key}");
        let deadline = tokio::time::Instant::now() + BACKGROUND_WORK;
        loop {
            let answer = self.api(reqwest::Method::GET, &path, None).await;
            let state = answer.body["state"].as_str().unwrap_or_default().to_owned();
            if state == wanted || tokio::time::Instant::now() >= deadline {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The request-log row of the call with transaction key `tx`, once the log writer (which
    /// batches every ~100 ms) has written it; `None` if it does not appear within [`BACKGROUND_WORK`].
    pub async fn log_row(&self, tx: &str) -> Option<Value> {
        self.log_row_where(&format!("transactionKey={tx}")).await
    }

    /// The newest request-log row matching `query` (a `GET /v1/logs` query string), once there
    /// is one; `None` if none appears within [`BACKGROUND_WORK`].
    pub async fn log_row_where(&self, query: &str) -> Option<Value> {
        wait_for_log_row(&self.client, &self.gateway.url, &self.key, query).await
    }

    /// A raw HTTP/1.1 request for the gateway with this setup's key: `head` is the request line
    /// and any headers of its own, `body` is sent whole.
    pub fn raw_request(&self, head: &str, body: &str) -> String {
        raw_request(&self.gateway.url, &self.key, head, body)
    }

    /// Send `request`, a call that makes the fake GitHub answer `GET /slow` (in 1.5 s), and
    /// hang up as soon as the fake has it.
    pub async fn hang_up_during_slow_call(&self, request: &str) {
        let reached_upstream = || self.upstream_requests().iter().any(|r| r.path == "/slow");
        hang_up_once(&self.gateway.url, request.as_bytes(), reached_upstream).await;
    }

    /// The row of the call whose caller hung up (`client_closed`), once it is written.
    pub async fn client_closed_row(&self) -> Value {
        self.log_row_where("outcome=client_closed")
            .await
            .expect("the abandoned call was logged")
    }

    /// Everything the upstream received.
    pub fn upstream_requests(&self) -> Vec<Recorded> {
        self.upstream.requests()
    }

    /// The secret must appear nowhere in what the gateway printed.
    pub fn assert_secret_not_logged(&self) {
        let output = self.gateway.output();
        assert!(
            !output.contains(SECRET),
            "the secret leaked into the gateway's output"
        );
    }
}

/// Whatever a test did, the connection secret must not have reached the gateway's output.
impl Drop for Setup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_secret_not_logged();
        }
    }
}

/// The newest request-log row matching `query` (a `GET /v1/logs` query string) on the gateway
/// at `url`, read with `key`, once there is one; `None` if none appears within
/// [`BACKGROUND_WORK`].
pub async fn wait_for_log_row(client: &reqwest::Client, url: &str, key: &str, query: &str) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + BACKGROUND_WORK;
    loop {
        let answer = send(client.get(format!("{url}/v1/logs?{query}")).bearer_auth(key)).await;
        if let Some(row) = answer.body["rows"].get(0) {
            return Some(row.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw HTTP/1.1 request for the gateway at `url` with `key`: `head` is the request line and
/// any headers of its own, `body` is sent whole (JSON, as far as `content-type` says).
pub fn raw_request(url: &str, key: &str, head: &str, body: &str) -> String {
    let address = url.trim_start_matches("http://");
    format!(
        "{head}\r\nhost: {address}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Send `request` (raw bytes) to the gateway at `url` on a connection of its own, wait until
/// `reached` says the call got far enough, then hang up without reading a byte of the answer.
pub async fn hang_up_once(url: &str, request: &[u8], reached: impl Fn() -> bool) {
    use tokio::io::AsyncWriteExt;
    let address = url.trim_start_matches("http://");
    let mut connection = tokio::net::TcpStream::connect(address).await.expect("connect");
    connection.write_all(request).await.expect("write");
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    while !reached() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never got far enough"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(connection);
}

/// Check the row of a call to `GET /slow` whose caller hung up before the answer: it says
/// nothing was sent (499), and was written once the upstream's answer had come in.
pub fn assert_ran_to_its_end_unanswered(row: &Value) {
    assert_eq!(
        (&row["httpStatus"], &row["upstreamStatus"], &row["responseBytes"]),
        (&json!(499), &json!(200), &json!(0)),
        "{row}"
    );
    let took = row["durationUs"].as_u64().expect("durationUs");
    assert!(
        took >= 1_400_000,
        "logged after {took} µs, before the upstream answered"
    );
}

/// A row of a call cut off when its caller hung up: nothing was sent (499) and no upstream
/// answer had come.
pub fn assert_cut_off_unanswered(row: &Value) {
    assert_eq!(
        (&row["httpStatus"], &row["upstreamStatus"], &row["responseBytes"]),
        (&json!(499), &Value::Null, &json!(0)),
        "{row}"
    );
}

/// Send a request with the test timeout and decode the reply.
pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("read body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("reply is not JSON: {}", String::from_utf8_lossy(&bytes)));
    Answer {
        status,
        headers,
        body,
    }
}
