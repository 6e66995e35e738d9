//! OAuth 2.0 end to end: the connect flow (state, PKCE, browser binding), token exchange,
//! proactive and reactive refresh with single flight, provider failures — against a fake
//! Google (authorize page, token endpoint and Gmail API) on loopback and the Gmail connector.

use crate::common::{Answer, SLUICE, send};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{FakeUpstream, Gateway, Recorded, Reply, guests};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const CLIENT_ID: &str = "sluice-test-client.apps.example";
pub const CLIENT_SECRET: &str = "GOCSPX-e2e-client-secret-value";

/// How the fake token endpoint answers refresh grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshMode {
    #[default]
    Grant,
    InvalidGrant,
    ServerError,
    /// A 200 whose JSON has no `access_token`.
    Malformed,
    /// A valid grant, sent only after the gateway's upstream timeout.
    TooSlow,
    /// A valid grant, sent after [`SLOW_GRANT`] (well within the upstream timeout).
    SlowGrant,
}

/// How long [`RefreshMode::SlowGrant`] takes to answer.
const SLOW_GRANT: Duration = Duration::from_millis(1500);

/// What the fake Google remembers.
#[derive(Debug, Default)]
pub struct GoogleState {
    /// Authorization codes issued: code → (PKCE challenge, redirect URI).
    codes: HashMap<String, (String, String)>,
    issued: u32,
    /// Access tokens the Gmail API accepts.
    pub valid_access: HashSet<String>,
    /// Every access and refresh token issued (to check none leaked).
    pub all_tokens: Vec<String>,
    /// The refresh token that works now (rotated on every refresh).
    current_refresh: Option<String>,
    /// Lifetime of issued access tokens.
    pub expires_in: i64,
    pub refresh_mode: RefreshMode,
    /// How authorization-code grants are answered (`Grant`: as the code and verifier deserve).
    pub code_mode: RefreshMode,
    /// Refresh grants received.
    pub refresh_calls: u32,
    /// Messages sent through the Gmail API (decoded `raw`).
    pub sent: Vec<String>,
    /// The Gmail API refuses every token, fresh ones too (access removed upstream).
    pub api_refuses_all: bool,
    /// Grants come without a refresh token (as Google's do without offline access).
    pub no_refresh_tokens: bool,
}

pub type Google = Arc<Mutex<GoogleState>>;

fn query_map(request: &Recorded) -> HashMap<String, String> {
    form_urlencoded::parse(request.query.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn issue_tokens(state: &mut GoogleState) -> Reply {
    state.issued += 1;
    let access = format!("ya29.access-token-{}", state.issued);
    let refresh = format!("1//refresh-token-{}", state.issued);
    state.valid_access.insert(access.clone());
    state.current_refresh = Some(refresh.clone());
    state.all_tokens.extend([access.clone(), refresh.clone()]);
    let mut grant = json!({"access_token": access, "refresh_token": refresh, "expires_in": state.expires_in,
               "token_type": "Bearer", "scope": "https://www.googleapis.com/auth/gmail.send"});
    if state.no_refresh_tokens {
        grant.as_object_mut().map(|fields| fields.remove("refresh_token"));
    }
    Reply::json(200, grant)
}

fn oauth_error(status: u16, error: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": error, "error_description": "refused by the fake"}),
    )
}

fn token_endpoint(state: &mut GoogleState, request: &Recorded) -> Reply {
    let form: HashMap<String, String> = form_urlencoded::parse(&request.body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return oauth_error(401, "invalid_client");
    }
    match field("grant_type") {
        "authorization_code" => {
            match state.code_mode {
                RefreshMode::ServerError => return Reply::text(503, "backend unavailable"),
                RefreshMode::Malformed => return Reply::json(200, json!({"token_type": "Bearer"})),
                RefreshMode::InvalidGrant => return oauth_error(400, "invalid_grant"),
                _ => {}
            }
            let Some((challenge, redirect_uri)) = state.codes.remove(field("code")) else {
                return oauth_error(400, "invalid_grant");
            };
            let computed = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(field("code_verifier").as_bytes()));
            if computed != challenge || redirect_uri != field("redirect_uri") {
                return oauth_error(400, "invalid_grant");
            }
            issue_tokens(state)
        }
        "refresh_token" => {
            state.refresh_calls += 1;
            match state.refresh_mode {
                RefreshMode::ServerError => Reply::text(503, "backend unavailable"),
                RefreshMode::Malformed => Reply::json(200, json!({"token_type": "Bearer"})),
                RefreshMode::TooSlow => issue_tokens(state).after(Duration::from_secs(15)),
                RefreshMode::SlowGrant
                    if state.current_refresh.as_deref() == Some(field("refresh_token")) =>
                {
                    issue_tokens(state).after(SLOW_GRANT)
                }
                RefreshMode::InvalidGrant => oauth_error(400, "invalid_grant"),
                RefreshMode::Grant if state.current_refresh.as_deref() == Some(field("refresh_token")) => {
                    issue_tokens(state)
                }
                RefreshMode::Grant | RefreshMode::SlowGrant => oauth_error(400, "invalid_grant"),
            }
        }
        _ => oauth_error(400, "unsupported_grant_type"),
    }
}

fn gmail_api(state: &mut GoogleState, request: &Recorded) -> Reply {
    let token = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if state.api_refuses_all || !state.valid_access.contains(token) {
        return Reply::json(
            401,
            json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
        );
    }
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/gmail/v1/users/me/labels") => Reply::json(
            200,
            json!({"labels": [{"id": "INBOX", "name": "INBOX", "type": "system"}, {"id": "Label_1", "name": "Receipts", "type": "user"}]}),
        ),
        ("POST", "/gmail/v1/users/me/messages/send") => {
            let raw = request.json()["raw"].as_str().unwrap_or("").to_owned();
            let decoded = base64::engine::general_purpose::URL_SAFE
                .decode(raw)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
            match decoded {
                Ok(message) => {
                    state.sent.push(message);
                    Reply::json(
                        200,
                        json!({"id": "msg-1", "threadId": "thr-1", "labelIds": ["SENT"]}),
                    )
                }
                Err(_) => Reply::json(400, json!({"error": {"code": 400, "message": "Invalid raw"}})),
            }
        }
        ("GET", "/gmail/v1/users/me/messages") => Reply::json(
            200,
            json!({"messages": [{"id": "msg-1", "threadId": "thr-1"}], "resultSizeEstimate": 1, "query": request.query}),
        ),
        ("GET", "/gmail/v1/users/me/messages/msg-1") => Reply::json(
            200,
            json!({"id": "msg-1", "threadId": "thr-1", "snippet": "Lunch?", "payload": {"headers": [{"name": "Subject", "value": "Lunch?"}]}}),
        ),
        _ => Reply::json(404, json!({"error": {"code": 404, "message": "Not Found"}})),
    }
}

/// The provider's consent page: one link that approves and sends the user back.
fn authorize(state: &mut GoogleState, request: &Recorded) -> Reply {
    let query = query_map(request);
    let get = |name: &str| query.get(name).cloned().unwrap_or_default();
    let well_formed = get("client_id") == CLIENT_ID
        && get("response_type") == "code"
        && get("code_challenge_method") == "S256"
        && get("access_type") == "offline"
        && get("prompt") == "consent"
        && get("scope").contains("gmail.send")
        && !get("state").is_empty()
        && get("code_challenge").len() == 43;
    if !well_formed {
        return Reply::text(400, "malformed authorization request");
    }
    state.issued += 1;
    let code = format!("auth-code-{}", state.issued);
    state
        .codes
        .insert(code.clone(), (get("code_challenge"), get("redirect_uri")));
    let back = format!(
        "{}?code={code}&state={}",
        get("redirect_uri"),
        form_urlencoded::byte_serialize(get("state").as_bytes()).collect::<String>()
    );
    let mut reply = Reply::text(
        200,
        &format!(
            "<!doctype html><title>Fake Google</title><h1>Allow Sluice to use your Gmail?</h1>\
             <a id=\"allow\" href=\"{}\">Allow</a>",
            back.replace('&', "&amp;")
        ),
    );
    reply.headers = vec![("content-type".into(), "text/html; charset=utf-8".into())];
    reply
}

/// A fake Google: authorize page, token endpoint and Gmail API on one loopback server.
pub async fn fake_google() -> (FakeUpstream, Google) {
    let google: Google = Arc::new(Mutex::new(GoogleState {
        expires_in: 3600,
        ..GoogleState::default()
    }));
    let shared = google.clone();
    let upstream = FakeUpstream::start(move |request| {
        let mut state = shared.lock().expect("google state");
        match request.path.as_str() {
            "/o/oauth2/v2/auth" => authorize(&mut state, request),
            "/token" => token_endpoint(&mut state, request),
            _ => gmail_api(&mut state, request),
        }
    })
    .await;
    (upstream, google)
}

/// A gateway with the Gmail connector, a registered OAuth app pointing at the fake Google,
/// and an API key.
pub struct OAuthSetup {
    pub gateway: Gateway,
    pub upstream: FakeUpstream,
    pub google: Google,
    pub key: String,
    pub client: reqwest::Client,
    /// The identity [`OAuthSetup::connect`] last connected: [`OAuthSetup::execute`] acts for
    /// it, as an app acting for its user names the user.
    acting_for: std::sync::Mutex<Option<String>>,
    /// Holds the policy file the gateway reads.
    _policy: tempfile::TempDir,
}

impl OAuthSetup {
    pub async fn new(extra_args: &[&str]) -> Self {
        Self::with_options(Options {
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            ..Options::default()
        })
        .await
    }

    pub async fn with_options(mut options: Options) -> Self {
        let (upstream, google) = fake_google().await;
        // Sessions send the connections they make to the fake Gmail API: an OAuth session may
        // choose a base URL only among those the operator allows.
        let policy = tempfile::tempdir().expect("policy dir");
        let policy_file = policy.path().join("policy.json");
        let allowed = json!({"connectors": {"gmail": {"baseUrls": [upstream.url()]}}});
        std::fs::write(&policy_file, allowed.to_string()).expect("write policy");
        options.extra_args.push("--policy".into());
        options.extra_args.push(policy_file.display().to_string());
        let gateway = Gateway::start(
            std::path::Path::new(SLUICE),
            &[guests::GMAIL, guests::GITHUB],
            options,
        )
        .await;
        let key = gateway.create_key("test", "*").await;
        let base = upstream.url();
        gateway
            .cli(&[
                "oauth-apps",
                "set",
                "gmail",
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                CLIENT_SECRET,
                "--authorize-url",
                &format!("{base}/o/oauth2/v2/auth"),
                "--token-url",
                &format!("{base}/token"),
                "--allow-private-upstreams",
                "--plugins",
                gateway.plugins_dir().to_str().expect("UTF-8"),
            ])
            .await
            .expect("oauth-apps set");
        // Only an OAuth connector takes an app, with the URLs and secret the admin API takes.
        for (integration, secret, extra, expected) in [
            ("github", "secret", &[][..], "`github` does not use OAuth 2.0"),
            ("nope", "secret", &[], "no integration named `nope`"),
            (
                "gmail",
                "secret",
                &["--token-url", "ftp://x/token"],
                "--token-url must be an absolute http(s) URL",
            ),
            (
                "gmail",
                "secret",
                &["--token-url", "http://provider.example/token"],
                "--token-url must be https",
            ),
            ("gmail", "s", &[], "--client-secret is shorter than 6 characters"),
        ] {
            let mut args = vec![
                "oauth-apps",
                "set",
                integration,
                "--client-id",
                "id",
                "--client-secret",
                secret,
                "--plugins",
                gateway.plugins_dir().to_str().expect("UTF-8"),
            ];
            args.extend_from_slice(extra);
            let refused = gateway.cli(&args).await.expect_err("refused");
            assert!(refused.contains(expected), "{refused}");
        }
        // Where the client secret and the users' tokens go is listed.
        let listed = gateway.cli(&["oauth-apps", "list"]).await.expect("list");
        assert!(listed.contains(&format!("\ttoken_url={base}/token")), "{listed}");
        Self {
            gateway,
            upstream,
            google,
            key,
            // Redirects are followed by hand so each hop can be checked.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            acting_for: std::sync::Mutex::default(),
            _policy: policy,
        }
    }

    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.gateway.url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    /// `POST /v1/gmail/{endpoint}`, for the identity last connected unless `body` names a
    /// connection itself.
    pub async fn execute(&self, endpoint: &str, mut body: Value) -> Answer {
        let acting_for = self.acting_for.lock().expect("identity").clone();
        if let Some(identity) = acting_for
            && body.get("identity").is_none()
            && body.get("connection_key").is_none()
        {
            body["identity"] = Value::String(identity);
        }
        self.api(Method::POST, &format!("/v1/gmail/{endpoint}"), Some(body))
            .await
    }

    /// `POST /v1/connect` for `identity`; returns (session id, connect URL).
    pub async fn open_session(&self, identity: &str) -> (String, String) {
        let created = self
            .api(
                Method::POST,
                "/v1/connect",
                // The connection made sends the connector's calls to the fake Gmail API.
                Some(json!({
                    "integration": "gmail", "identity": identity, "identityType": "user",
                    "baseUrl": self.upstream.url()
                })),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        assert_eq!(created.body["status"], "pending");
        (
            created.body["id"].as_str().expect("id").to_owned(),
            created.body["url"].as_str().expect("url").to_owned(),
        )
    }

    /// Walk the flow with plain HTTP (what a browser does): connect page, authorize redirect
    /// (keeping the cookie), the provider's consent link, the callback. Returns the callback's
    /// status and page.
    pub async fn walk_flow(&self, connect_url: &str) -> (u16, String) {
        let done = self.walk_to_the_callback(connect_url).await;
        let status = done.status().as_u16();
        (status, done.text().await.expect("success page"))
    }

    /// The same, for a session that returns to the app: the callback's status and `Location`.
    pub async fn walk_flow_to_the_end(&self, connect_url: &str) -> (u16, String) {
        let done = self.walk_to_the_callback(connect_url).await;
        let location = done.headers().get("location").and_then(|v| v.to_str().ok());
        (done.status().as_u16(), location.unwrap_or_default().to_owned())
    }

    /// The sign-in link of the connect page at `connect_url`, as a browser would follow it.
    pub async fn sign_in_link(&self, connect_url: &str) -> String {
        let page = self.client.get(connect_url).send().await.expect("connect page");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("page");
        assert!(html.contains("Continue to Gmail"), "{html}");
        assert!(
            html.contains("uses them only with <b id=\"destination\">"),
            "{html}"
        );
        let href = html
            .split("id=\"continue\" href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("a sign-in link: {html}"))
            .replace("&amp;", "&");
        format!("{}{href}", self.gateway.url)
    }

    /// Follow the sign-in link of the page at `connect_url`: the browser-binding cookie
    /// (`name=value`) and the provider's authorize URL it was sent to.
    pub async fn start_sign_in(&self, connect_url: &str) -> (String, String) {
        let link = self.sign_in_link(connect_url).await;
        let start = self.client.get(&link).send().await.expect("authorize step");
        assert_eq!(start.status(), 303);
        let cookie = start.headers()["set-cookie"].to_str().expect("cookie").to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        let provider = start.headers()["location"].to_str().expect("location").to_owned();
        assert!(
            provider.starts_with(&self.upstream.url()),
            "redirects only to the provider: {provider}"
        );
        (
            cookie.split(';').next().expect("cookie pair").to_owned(),
            provider,
        )
    }

    /// Approve on the fake provider's consent page at `provider`: the callback URL it links.
    pub async fn consent(&self, provider: &str) -> String {
        let consent = self.client.get(provider).send().await.expect("consent page");
        assert_eq!(
            consent.status(),
            200,
            "the fake Google accepted the authorize request"
        );
        let consent = consent.text().await.expect("consent");
        consent
            .split("href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("allow link")
            .replace("&amp;", "&")
    }

    /// Start the sign-in at `connect_url`, then come back from the provider refusing consent
    /// (`error=access_denied`); returns the callback's answer.
    pub async fn refuse_consent(&self, connect_url: &str) -> reqwest::Response {
        let (cookie, provider) = self.start_sign_in(connect_url).await;
        let provider = url::Url::parse(&provider).expect("url");
        let state = provider
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("state");
        self.client
            .get(format!(
                "{}/connect/oauth/callback?error=access_denied&state={state}",
                self.gateway.url
            ))
            .header("cookie", cookie)
            .send()
            .await
            .expect("callback")
    }

    async fn walk_to_the_callback(&self, connect_url: &str) -> reqwest::Response {
        let (cookie, provider) = self.start_sign_in(connect_url).await;
        let callback = self.consent(&provider).await;
        self.client
            .get(&callback)
            .header("cookie", cookie)
            .send()
            .await
            .expect("callback")
    }

    /// Connect `identity` through the whole flow; returns the connection key.
    pub async fn connect(&self, identity: &str) -> String {
        let (id, url) = self.open_session(identity).await;
        let (status, page) = self.walk_flow(&url).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("Gmail connected"), "{page}");
        let polled = self.api(Method::GET, &format!("/v1/connect/{id}"), None).await;
        assert_eq!(polled.body["status"], "connected", "{:?}", polled.body);
        let key = polled.body["connectionKey"]
            .as_str()
            .expect("connection key")
            .to_owned();
        // The session's base URL came with the credential: calls go to the fake Gmail API.
        let connection = self
            .api(Method::GET, &format!("/v1/vault/connections/{key}"), None)
            .await;
        let base_url = url::Url::parse(&self.upstream.url()).expect("upstream URL");
        assert_eq!(
            connection.body["baseUrl"],
            base_url.as_str(),
            "{:?}",
            connection.body
        );
        *self.acting_for.lock().expect("identity") = Some(identity.to_owned());
        key
    }

    /// The provider stops accepting every access token issued so far and answers refresh
    /// grants as `mode` says.
    pub fn revoke_access_tokens(&self, mode: RefreshMode) {
        let mut state = self.google.lock().expect("state");
        state.valid_access.clear();
        state.refresh_mode = mode;
    }

    /// The vault API's `state` of a connection.
    pub async fn connection_state(&self, key: &str) -> Value {
        let shown = self
            .api(Method::GET, &format!("/v1/vault/connections/{key}"), None)
            .await;
        shown.body["state"].clone()
    }

    /// No token, code, verifier or client secret may appear in what the gateway printed.
    pub fn assert_no_secret_logged(&self) {
        let output = self.gateway.output();
        let google = self.google.lock().expect("state");
        for secret in google
            .all_tokens
            .iter()
            .map(String::as_str)
            .chain([CLIENT_SECRET])
        {
            assert!(
                !output.contains(secret),
                "`{secret}` leaked into the gateway's output"
            );
        }
    }
}

#[tokio::test]
async fn connecting_through_the_flow_stores_tokens_the_connector_never_sees() {
    let setup = OAuthSetup::new(&[]).await;
    let key = setup.connect("alice").await;
    assert!(key.starts_with("test::gmail::alice::"), "{key}");

    let labels = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(labels.status, 200, "{:?}", labels.body);
    assert_eq!(labels.body["data"]["labels"][1]["name"], "Receipts");

    let sent = setup
        .execute(
            "send_email",
            json!({"params": {"to": ["bob@example.com"], "subject": "Grüße", "text": "Lunch at noon?"}}),
        )
        .await;
    assert_eq!(sent.status, 200, "{:?}", sent.body);
    assert_eq!(sent.body["data"]["labelIds"][0], "SENT");
    let message = setup
        .google
        .lock()
        .expect("state")
        .sent
        .pop()
        .expect("a message was sent");
    assert!(message.contains("To: bob@example.com\r\n"), "{message}");
    assert!(message.contains("Subject: =?UTF-8?B?"), "{message}");

    let listed = setup
        .execute(
            "list_messages",
            json!({"params": {"q": "is:unread", "max_results": 5, "label_ids": ["INBOX", "UNREAD"]}}),
        )
        .await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let query = listed.body["data"]["query"].as_str().unwrap_or_default();
    assert!(
        query.contains("q=is%3Aunread")
            && query.contains("labelIds=INBOX")
            && query.contains("labelIds=UNREAD"),
        "{query}"
    );
    let message = setup
        .execute(
            "get_message",
            json!({"params": {"id": "msg-1", "format": "metadata"}}),
        )
        .await;
    assert_eq!(message.body["data"]["snippet"], "Lunch?");

    // Header injection through params is refused before anything is sent.
    let injected = setup
        .execute(
            "send_email",
            json!({"params": {"to": ["bob@example.com"], "subject": "Hi\r\nBcc: eve@example.com", "text": "x"}}),
        )
        .await;
    assert_eq!(injected.status, 400, "{:?}", injected.body);
    assert_eq!(injected.code(), "bad_request");
    // So is a recipient that is no address: the schema says so, the connector need not.
    let not_an_address = setup
        .execute(
            "send_email",
            json!({"params": {"to": ["000"], "subject": "Hi", "text": "x"}}),
        )
        .await;
    assert_eq!(not_an_address.status, 400, "{:?}", not_an_address.body);
    let message = not_an_address.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/to/0"),
        "the schema refused it, naming the field: {message}"
    );

    // The vault API shows the connection but none of its tokens.
    let shown = setup
        .api(Method::GET, &format!("/v1/vault/connections/{key}"), None)
        .await;
    assert_eq!(shown.body["state"], "operational");
    let text = shown.body.to_string();
    for token in &setup.google.lock().expect("state").all_tokens {
        assert!(!text.contains(token.as_str()));
    }
    setup.assert_no_secret_logged();
}

#[tokio::test]
async fn a_state_works_once_only_in_its_browser_and_only_in_time() {
    let setup = OAuthSetup::new(&["--connect-session-ttl-secs", "600"]).await;
    let (_, url) = setup.open_session("bob").await;
    let (cookie, provider) = setup.start_sign_in(&url).await;
    let callback = setup.consent(&provider).await;

    // Another browser (no cookie) presenting the right state is refused, and burns the state.
    let stolen = setup.client.get(&callback).send().await.expect("callback");
    assert_eq!(stolen.status(), 400);
    // The advice fits what happened: the session is still open, from its link.
    assert!(
        stolen
            .text()
            .await
            .expect("page")
            .contains("Open the connect link again in the browser you sign in with")
    );
    let replay = setup
        .client
        .get(&callback)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(replay.status(), 400, "a used state never completes a flow");
    assert!(replay.text().await.expect("page").contains("already completed"));

    // An unknown state, a missing one and a garbage one are refused the same way.
    for query in ["?code=x&state=made-up", "?code=x", "?state=%ZZ"] {
        let answer = setup
            .client
            .get(format!("{}/connect/oauth/callback{query}", setup.gateway.url))
            .send()
            .await
            .expect("callback");
        assert_eq!(answer.status(), 400, "{query}");
    }
    // The session is still pending (a link scanner's fetch, a second browser, does not end
    // the user's attempt): its link starts a new sign-in, which completes in its own browser.
    let page = setup.client.get(&url).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let (status, page) = setup.walk_flow(&url).await;
    assert_eq!(status, 200, "{page}");
    // Unknown links and sessions.
    let unknown = setup
        .client
        .get(format!("{}/connect/cst_nope", setup.gateway.url))
        .send()
        .await
        .expect("page");
    assert_eq!(unknown.status(), 404);
    let missing = setup.api(Method::GET, "/v1/connect/cs_nope", None).await;
    assert_eq!(missing.code(), "not_found");
    setup.assert_no_secret_logged();
}

/// Two sign-ins under way in one browser (two tabs: two accounts, or a second integration)
/// each keep their own cookie, so finishing either one works whatever the order.
#[tokio::test]
async fn two_sign_ins_in_one_browser_both_complete() {
    let setup = OAuthSetup::new(&[]).await;
    let (first_id, first_url) = setup.open_session("cy").await;
    let (second_id, second_url) = setup.open_session("dee").await;
    let (first_cookie, first_provider) = setup.start_sign_in(&first_url).await;
    let (second_cookie, second_provider) = setup.start_sign_in(&second_url).await;
    let name_of = |pair: &str| pair.split('=').next().expect("name").to_owned();
    assert_ne!(name_of(&first_cookie), name_of(&second_cookie));
    // The browser sends every cookie it holds for the path.
    let jar = format!("{first_cookie}; {second_cookie}");
    let attempts = [
        (second_id, second_provider, &second_cookie),
        (first_id, first_provider, &first_cookie),
    ];
    for (id, provider, cookie) in attempts {
        let callback = setup.consent(&provider).await;
        let done = setup
            .client
            .get(&callback)
            .header("cookie", &jar)
            .send()
            .await
            .expect("callback");
        assert_eq!(done.status(), 200, "{id}");
        // The spent attempt's cookie is removed, and only that one.
        assert_eq!(done.headers().get_all("set-cookie").iter().count(), 1);
        let removed = done.headers()["set-cookie"].to_str().expect("cookie");
        assert!(
            removed.starts_with(&format!("{}=;", name_of(cookie))),
            "{removed}"
        );
        assert!(removed.contains("Max-Age=0"), "{removed}");
        let polled = setup.api(Method::GET, &format!("/v1/connect/{id}"), None).await;
        assert_eq!(polled.body["status"], "connected", "{:?}", polled.body);
    }
}

/// Sign-in starts only from a connect page, which names where the tokens will be used, and
/// the tokens are stored only if that still holds when the provider sends the user back.
#[tokio::test]
async fn sign_in_starts_from_the_page_and_stores_nothing_if_the_destination_moved() {
    let setup = OAuthSetup::new(&[]).await;
    // No base URL on the session: the page names Gmail's own API.
    let created = setup
        .api(
            Method::POST,
            "/v1/connect",
            Some(json!({"integration": "gmail", "identity": "erin"})),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let url = created.body["url"].as_str().expect("url").to_owned();
    let page_names = |origin: &str| format!("<b id=\"destination\">{origin}</b>");
    let page = setup.client.get(&url).send().await.expect("page");
    assert!(
        page.text()
            .await
            .expect("html")
            .contains(&page_names("https://gmail.googleapis.com"))
    );

    // A link straight to the sign-in (the page skipped, or its token made up) leads to the page.
    let page_path = url.strip_prefix(&setup.gateway.url).expect("a gateway URL");
    for query in ["", "?shown=", "?shown=00ff", "?shown=%ZZ"] {
        let direct = setup
            .client
            .get(format!("{url}/authorize{query}"))
            .send()
            .await
            .expect("authorize");
        assert_eq!(direct.status(), 303, "{query}");
        assert_eq!(direct.headers()["location"], page_path, "{query}");
        assert!(direct.headers().get("set-cookie").is_none(), "{query}");
    }

    let (cookie, provider) = setup.start_sign_in(&url).await;
    let callback = setup.consent(&provider).await;
    // Meanwhile the identity got a connection of its own, with another API's base URL: the
    // flow would store the tokens in it, to be sent where the page did not say.
    let upstream = setup.upstream.url();
    let made = setup
        .api(
            Method::POST,
            "/v1/vault/connections",
            Some(
                json!({"platform": "gmail", "secret": "ya29_made_meanwhile", "identity": "erin",
                         "baseUrl": upstream}),
            ),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let back = setup
        .client
        .get(&callback)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(back.status(), 400);
    let moved_to = url::Url::parse(&upstream)
        .expect("url")
        .origin()
        .ascii_serialization();
    let text = back.text().await.expect("page");
    assert!(
        text.contains("changed while you were signing in") && text.contains(&moved_to),
        "{text}"
    );
    let google = setup.google.lock().expect("state").all_tokens.clone();
    assert!(google.is_empty(), "the code was never exchanged: {google:?}");
    let polled = setup.api(Method::GET, &format!("/v1/connect/{id}"), None).await;
    assert_eq!(polled.body["status"], "pending", "{:?}", polled.body);

    // The page now names the new destination, and a sign-in from it completes, into the
    // identity's connection.
    let page = setup.client.get(&url).send().await.expect("page");
    assert!(page.text().await.expect("html").contains(&page_names(&moved_to)));
    let (status, done) = setup.walk_flow(&url).await;
    assert_eq!(status, 200, "{done}");
    let polled = setup.api(Method::GET, &format!("/v1/connect/{id}"), None).await;
    assert_eq!(polled.body["status"], "connected", "{:?}", polled.body);
    assert_eq!(polled.body["connectionKey"], made.body["key"], "{:?}", made.body);
}

#[tokio::test]
async fn an_expired_session_cannot_start() {
    let setup = OAuthSetup::new(&["--connect-session-ttl-secs", "1"]).await;
    let (id, url) = setup.open_session("carol").await;
    let with_return = setup
        .api(
            Method::POST,
            "/v1/connect",
            Some(json!({
                "integration": "gmail", "identity": "carol",
                "returnUrl": "https://app.example/back?tab=accounts"
            })),
        )
        .await;
    assert_eq!(with_return.status, 201, "{:?}", with_return.body);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let page = setup.client.get(&url).send().await.expect("page");
    assert_eq!(page.status(), 410);
    assert!(!page.text().await.expect("page").contains("id=\"return\""));
    // A session the app gave a page to return to offers the way back, telling the app it
    // expired (not a redirect: an old link does not stay one to wherever its app pointed it).
    let returning = setup
        .client
        .get(with_return.body["url"].as_str().expect("url"))
        .send()
        .await
        .expect("page");
    assert_eq!(returning.status(), 410);
    let html = returning.text().await.expect("page");
    let back = format!(
        "id=\"return\" href=\"https://app.example/back?tab=accounts&amp;connectSessionId={}&amp;status=expired\"",
        with_return.body["id"].as_str().expect("id")
    );
    assert!(html.contains(&back), "{html}");
    let start = setup
        .client
        .get(format!("{url}/authorize"))
        .send()
        .await
        .expect("start");
    assert_eq!(
        start.status(),
        410,
        "no redirect to the provider for an expired session"
    );
    let polled = setup.api(Method::GET, &format!("/v1/connect/{id}"), None).await;
    assert_eq!(polled.body["status"], "expired");
    // A key scoped to other integrations does not see the session (its identity, base URL,
    // connection key) at all.
    let echo_only = setup.gateway.create_key("test", "echo").await;
    let hidden = send(
        setup
            .client
            .get(format!("{}/v1/connect/{id}", setup.gateway.url))
            .bearer_auth(&echo_only),
    )
    .await;
    assert_eq!((hidden.status, hidden.code()), (404, "not_found"));
}

#[tokio::test]
async fn the_provider_refusing_consent_fails_the_session() {
    let setup = OAuthSetup::new(&[]).await;
    let (id, url) = setup.open_session("dave").await;
    let denied = setup.refuse_consent(&url).await;
    assert!(denied.text().await.expect("page").contains("access_denied"));
    let polled = setup.api(Method::GET, &format!("/v1/connect/{id}"), None).await;
    assert_eq!(polled.body["status"], "failed");
    assert_eq!(polled.body["errorCode"], "authorization_refused");
    assert!(
        polled.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("access_denied")
    );
}

/// A token endpoint that is down as the user comes back leaves the session pending, so the
/// same link works once it is back (the page says to open it again, and that is true). One
/// that refuses the code, or answers without tokens, fails the session with a code.
#[tokio::test]
async fn a_code_exchange_fails_the_session_only_when_retrying_cannot_help() {
    let setup = &OAuthSetup::new(&[]).await;
    let set_code_mode = |mode| setup.google.lock().expect("google state").code_mode = mode;
    let poll = |id: String| async move {
        let polled = setup.api(Method::GET, &format!("/v1/connect/{id}"), None).await;
        assert_eq!(polled.status, 200, "{:?}", polled.body);
        polled.body
    };

    let (id, url) = setup.open_session("gus").await;
    set_code_mode(RefreshMode::ServerError);
    let (status, page) = setup.walk_flow(&url).await;
    assert_eq!(status, 502, "{page}");
    assert!(page.contains("Open the connect link again to retry"), "{page}");
    assert_eq!(poll(id.clone()).await["status"], "pending");
    set_code_mode(RefreshMode::Grant);
    let (status, page) = setup.walk_flow(&url).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(poll(id).await["status"], "connected");

    for (identity, mode) in [
        ("hal", RefreshMode::InvalidGrant),
        ("ida", RefreshMode::Malformed),
    ] {
        let (id, url) = setup.open_session(identity).await;
        set_code_mode(mode);
        let (status, page) = setup.walk_flow(&url).await;
        assert_eq!(status, 502, "{mode:?}: {page}");
        assert!(
            page.contains("Ask the application for a new link"),
            "{mode:?}: {page}"
        );
        let session = poll(id).await;
        assert_eq!(session["status"], "failed", "{mode:?}: {session}");
        assert_eq!(
            session["errorCode"], "token_exchange_failed",
            "{mode:?}: {session}"
        );
    }
}

/// With a `returnUrl`, the user goes back to the app when the flow ends, told how it ended
/// (the app's own query kept), instead of being left on a page that says to close the window.
#[tokio::test]
async fn the_user_returns_to_the_app_when_the_flow_ends() {
    let setup = OAuthSetup::new(&[]).await;
    // The app's own `status` is replaced by the outcome's, not followed by it.
    let return_url = "http://localhost:3000/settings?tab=integrations&status=stale";
    let open = |identity: &'static str| {
        let body = json!({
            "integration": "gmail", "identity": identity,
            "baseUrl": setup.upstream.url(), "returnUrl": return_url
        });
        async {
            let created = setup.api(Method::POST, "/v1/connect", Some(body)).await;
            assert_eq!(created.status, 201, "{:?}", created.body);
            assert_eq!(created.body["returnUrl"], return_url);
            let field = |name: &str| created.body[name].as_str().expect(name).to_owned();
            (field("id"), field("url"))
        }
    };
    let back_to_app = |location: &str| {
        let back = url::Url::parse(location).expect("a URL");
        assert_eq!(back.origin().ascii_serialization(), "http://localhost:3000");
        assert_eq!(back.path(), "/settings");
        assert_eq!(
            back.query_pairs().filter(|(name, _)| name == "status").count(),
            1,
            "{back}"
        );
        back.query_pairs()
            .into_owned()
            .collect::<HashMap<String, String>>()
    };

    let (id, url) = open("erin").await;
    let denied = setup.refuse_consent(&url).await;
    assert_eq!(denied.status(), 303);
    let query = back_to_app(denied.headers()["location"].to_str().expect("location"));
    assert_eq!(query["tab"], "integrations");
    assert_eq!(query["connectSessionId"], id);
    assert_eq!(query["status"], "failed");
    assert_eq!(query["errorCode"], "authorization_refused");
    assert!(query["error"].contains("access_denied"), "{query:?}");

    let (id, url) = open("fay").await;
    let (status, location) = setup.walk_flow_to_the_end(&url).await;
    assert_eq!(status, 303);
    let query = back_to_app(&location);
    assert_eq!(query["connectSessionId"], id);
    assert_eq!(query["status"], "connected");
    let polled = setup.api(Method::GET, &format!("/v1/connect/{id}"), None).await;
    assert_eq!(
        polled.body["connectionKey"].as_str(),
        Some(query["connectionKey"].as_str())
    );
}

#[tokio::test]
async fn a_hundred_calls_on_an_expiring_token_share_one_refresh() {
    let setup = OAuthSetup::new(&["--max-in-flight-per-connector", "128"]).await;
    // A token in the second half of its life (here a 2-second one, 1.5 s on) is refreshed
    // before use. (A token living longer than twice the 5-minute margin would be refreshed
    // within the margin; one living less, at half its life, not before every call.)
    setup.google.lock().expect("state").expires_in = 2;
    setup.connect("erin").await;
    setup.google.lock().expect("state").expires_in = 3600;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let calls = (0..100).map(|_| setup.execute("list_labels", json!({"params": {}})));
    let answers = futures::future::join_all(calls).await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    }
    assert_eq!(
        setup.google.lock().expect("state").refresh_calls,
        1,
        "exactly one refresh for 100 concurrent calls"
    );
    let metrics = setup.gateway.metrics().await;
    assert!(
        metrics.contains("sluice_oauth_token_refreshes_total{integration=\"gmail\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    setup.assert_no_secret_logged();
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_the_call_retried() {
    let setup = OAuthSetup::new(&[]).await;
    setup.connect("frank").await;
    // The provider revokes the access token early; the refresh token still works.
    setup.revoke_access_tokens(RefreshMode::Grant);
    let answer = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        answer.body["status"], 200,
        "the connector saw only the retried response"
    );
    let state = setup.google.lock().expect("state");
    assert_eq!(state.refresh_calls, 1);
    let rejected = setup
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/gmail/v1/users/me/labels")
        .count();
    assert_eq!(rejected, 2, "one rejected request and one retry");
    drop(state);
    setup.assert_no_secret_logged();
}

/// A passthrough request without a body is refreshed and retried once after a 401, as an
/// action's is; one with a body (which streamed through and cannot be sent again) gets the 401.
#[tokio::test]
async fn a_passthrough_without_a_body_is_retried_after_a_refresh() {
    let setup = OAuthSetup::new(&[]).await;
    let key = setup.connect("gina").await;
    let passthrough = |method: Method, body: Option<&'static str>| {
        let mut request = setup
            .client
            .request(
                method,
                format!("{}/v1/passthrough/gmail/v1/users/me/labels", setup.gateway.url),
            )
            .bearer_auth(&setup.key)
            .header("x-sluice-connection-key", &key);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        async { request.send().await.expect("passthrough") }
    };
    let labels_requests = || {
        setup
            .upstream
            .requests()
            .iter()
            .filter(|r| r.path == "/gmail/v1/users/me/labels")
            .count()
    };

    setup.revoke_access_tokens(RefreshMode::Grant);
    let before = labels_requests();
    let answer = passthrough(Method::GET, None).await;
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    assert_eq!(setup.google.lock().expect("state").refresh_calls, 1);
    assert_eq!(
        labels_requests() - before,
        2,
        "one rejected request and one retry"
    );

    setup.revoke_access_tokens(RefreshMode::Grant);
    let before = labels_requests();
    let answer = passthrough(Method::POST, Some(r#"{"name":"x"}"#)).await;
    assert_eq!(answer.status(), 401, "the upstream's answer, as it came");
    assert_eq!(labels_requests() - before, 1, "a streamed body is not sent twice");

    // A refresh the provider refuses is told as an action's caller is told it: the token
    // expired, and where the user reconnects; not the upstream's 401.
    setup.revoke_access_tokens(RefreshMode::InvalidGrant);
    let answer = passthrough(Method::GET, None).await;
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(body["error"], "token_expired", "{body}");
    assert!(
        body["action_url"]
            .as_str()
            .is_some_and(|url| url.contains("/connect/")),
        "{body}"
    );
    setup.assert_no_secret_logged();
}

#[tokio::test]
async fn a_refused_refresh_fails_the_connection_and_offers_a_reconnect_link() {
    let setup = OAuthSetup::new(&[]).await;
    let key = setup.connect("grace").await;
    setup.revoke_access_tokens(RefreshMode::InvalidGrant);
    let answer = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(answer.status, 401, "{:?}", answer.body);
    assert_eq!(answer.code(), "token_expired");
    let action_url = answer.body["action_url"].as_str().expect("action_url");
    assert!(
        action_url.starts_with(&format!("{}/connect/cst_", setup.gateway.url)),
        "{action_url}"
    );
    assert_eq!(setup.connection_state(&key).await, "failed");
    // The refused refresh token is not sent again: the next call is told the same, at once.
    let refreshes = setup.google.lock().expect("state").refresh_calls;
    let again = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(
        (again.status, again.code()),
        (401, "token_expired"),
        "{:?}",
        again.body
    );
    assert_eq!(again.body["message"], answer.body["message"]);
    assert!(again.body["action_url"].is_string(), "{:?}", again.body);
    assert_eq!(setup.google.lock().expect("state").refresh_calls, refreshes);

    // The reconnect link updates the same connection, which then works again.
    setup.google.lock().expect("state").refresh_mode = RefreshMode::Grant;
    let (status, page) = setup.walk_flow(action_url).await;
    assert_eq!(status, 200, "{page}");
    let again = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(
        setup.connection_state(&key).await,
        "operational",
        "the same connection was reconnected"
    );
    setup.assert_no_secret_logged();
}

/// A grant without a refresh token is used for as long as its access token lasts: not marked
/// failed as it nears its expiry, as there is nothing to refresh it with.
#[tokio::test]
async fn a_token_without_a_refresh_token_is_used_until_it_expires() {
    let setup = OAuthSetup::new(&[]).await;
    {
        let mut google = setup.google.lock().expect("state");
        google.no_refresh_tokens = true;
        // A 10-second token is due for a refresh in the second half of its life.
        google.expires_in = 10;
    }
    let key = setup.connect("jo").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for _ in 0..2 {
        let answer = setup.execute("list_labels", json!({"params": {}})).await;
        assert_eq!(
            (answer.status, &answer.body["status"]),
            (200, &json!(200)),
            "{:?}",
            answer.body
        );
    }
    assert_eq!(setup.connection_state(&key).await, "operational");
    assert_eq!(setup.google.lock().expect("state").refresh_calls, 0);
}

/// An upstream that keeps refusing freshly refreshed tokens (access removed there) fails the
/// connection after a few calls, with a reconnect link: a refresh alone does not make it look
/// operational again.
#[tokio::test]
async fn a_connection_whose_refreshed_tokens_are_refused_too_fails() {
    let setup = OAuthSetup::new(&[]).await;
    let key = setup.connect("ivy").await;
    setup.google.lock().expect("state").api_refuses_all = true;
    for _ in 0..3 {
        let answer = setup.execute("list_labels", json!({"params": {}})).await;
        assert_eq!(answer.body["status"], 401, "{:?}", answer.body);
    }
    // The connection's health is written as each call ends, off its answer's path.
    let started = std::time::Instant::now();
    while setup.connection_state(&key).await != "failed" {
        assert!(
            started.elapsed() < crate::common::BACKGROUND_WORK,
            "still {}",
            setup.connection_state(&key).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        setup.google.lock().expect("state").refresh_calls,
        3,
        "one refresh a call"
    );
    let failed = setup.execute("list_labels", json!({"params": {}})).await;
    assert!(failed.body["action_url"].is_string(), "{:?}", failed.body);
}

/// A refresh refused while the access token still works (it is due, not expired) tells every
/// call to reconnect: not one call 401 and the next 200 on the old token, nor another refresh.
#[tokio::test]
async fn a_refresh_refused_before_expiry_is_answered_alike_every_time() {
    let setup = OAuthSetup::new(&[]).await;
    setup.google.lock().expect("state").expires_in = 4;
    let key = setup.connect("heidi").await;
    setup.google.lock().expect("state").refresh_mode = RefreshMode::InvalidGrant;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..3 {
        let answer = setup.execute("list_labels", json!({"params": {}})).await;
        assert_eq!(
            (answer.status, answer.code()),
            (401, "token_expired"),
            "{:?}",
            answer.body
        );
        assert_eq!(setup.connection_state(&key).await, "failed");
    }
    assert_eq!(setup.google.lock().expect("state").refresh_calls, 1);
}

/// Connect `identity`, make the provider answer refreshes as `mode` says, call Gmail and check
/// the call fails with a retryable 502 that leaves the connection usable. Returns the reply and
/// how long the call took.
async fn refresh_fails_retryably(
    setup: &OAuthSetup,
    identity: &str,
    mode: RefreshMode,
) -> (Answer, Duration) {
    let key = setup.connect(identity).await;
    setup.revoke_access_tokens(mode);
    let started = std::time::Instant::now();
    let answer = setup.execute("list_labels", json!({"params": {}})).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.code(), "token_refresh_failed");
    assert_ne!(
        setup.connection_state(&key).await,
        "failed",
        "a provider failure does not fail the connection"
    );
    (answer, took)
}

fn message_of(answer: &Answer) -> &str {
    answer.body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_provider_outage_is_a_retryable_error_that_keeps_the_connection() {
    let setup = OAuthSetup::new(&[]).await;
    let (answer, _) = refresh_fails_retryably(&setup, "heidi", RefreshMode::ServerError).await;
    assert!(message_of(&answer).contains("503"), "{:?}", answer.body);
    setup.assert_no_secret_logged();
}

#[tokio::test]
async fn a_malformed_token_response_is_a_retryable_error_that_keeps_the_connection() {
    let setup = OAuthSetup::new(&[]).await;
    let (answer, _) = refresh_fails_retryably(&setup, "ivan", RefreshMode::Malformed).await;
    assert!(message_of(&answer).contains("access_token"), "{:?}", answer.body);

    // Once the provider answers properly again, the same connection works.
    setup.google.lock().expect("state").refresh_mode = RefreshMode::Grant;
    let again = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    setup.assert_no_secret_logged();
}

#[tokio::test]
async fn a_token_endpoint_that_times_out_is_a_retryable_error_that_keeps_the_connection() {
    let setup = OAuthSetup::new(&["--upstream-timeout-ms", "1000"]).await;
    let (_, took) = refresh_fails_retryably(&setup, "judy", RefreshMode::TooSlow).await;
    assert!(
        took < Duration::from_secs(10),
        "the gateway gave up at its timeout instead of waiting for the provider"
    );
    setup.assert_no_secret_logged();
}

#[tokio::test]
async fn connect_sessions_validate_their_input_and_api_key_integrations_get_a_form() {
    let setup = OAuthSetup::new(&[]).await;
    for (body, code) in [
        (json!({"integration": "nope"}), "bad_request"),
        (json!({"integration": "gmail", "bogus": 1}), "bad_request"),
        (
            json!({"integration": "gmail", "connectionKey": "test::gmail::x::1"}),
            "bad_request",
        ),
        (json!({"integration": "gmail", "identity": ""}), "bad_request"),
        (
            json!({"integration": "gmail", "identityType": "banana"}),
            "bad_request",
        ),
        (
            json!({"integration": "gmail", "identityType": "user"}),
            "bad_request",
        ),
        (
            json!({"integration": "gmail", "baseUrl": "ftp://x"}),
            "bad_request",
        ),
        (
            json!({"integration": "gmail", "baseUrl": "not a url"}),
            "bad_request",
        ),
        (
            json!({"integration": "gmail", "returnUrl": "http://app.example/done"}),
            "bad_request",
        ),
        (
            json!({"integration": "gmail", "returnUrl": "javascript:alert(1)"}),
            "bad_request",
        ),
        (
            json!({"integration": "gmail", "returnUrl": "https://user:pw@app.example/done"}),
            "bad_request",
        ),
        (
            json!({"integration": "gmail", "returnUrl": "/done"}),
            "bad_request",
        ),
        (
            json!({"integration": "gmail", "returnUrl": "https://app;x.example/done"}),
            "bad_request",
        ),
        // A page's form-action cannot name an IPv6 address: browsers would stop the redirect.
        (
            json!({"integration": "gmail", "returnUrl": "http://[::1]:3000/done"}),
            "bad_request",
        ),
    ] {
        let answer = setup.api(Method::POST, "/v1/connect", Some(body.clone())).await;
        assert_eq!(answer.code(), code, "{body}: {:?}", answer.body);
        // Every refusal names what was wrong; the unknown integration and connection are
        // body fields, so they are named as such (as the vault API does).
        if let Some(field) = body
            .get("connectionKey")
            .map(|_| "`connectionKey`")
            .or_else(|| body.get("returnUrl").map(|_| "`returnUrl`"))
            .or_else(|| (body["integration"] == "nope").then_some("`integration`"))
        {
            let message = answer.body["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(field), "{body}: {message}");
        }
    }
    let unauthenticated = send(
        setup
            .client
            .post(format!("{}/v1/connect", setup.gateway.url))
            .json(&json!({})),
    )
    .await;
    assert_eq!(unauthenticated.code(), "unauthorized");

    // Without an OAuth app no new session opens, and the page of one opened before the app
    // was removed explains instead of redirecting anywhere.
    let (_, url) = setup.open_session("ivan").await;
    setup
        .gateway
        .cli(&["oauth-apps", "remove", "gmail"])
        .await
        .expect("remove");
    let refused = setup
        .api(
            Method::POST,
            "/v1/connect",
            Some(json!({"integration": "gmail", "identity": "ivan"})),
        )
        .await;
    assert_eq!((refused.status, refused.code()), (400, "bad_request"));
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not set up") && message.contains("no OAuth app"),
        "{message}"
    );
    let start = setup
        .client
        .get(format!("{url}/authorize"))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), 503);
    assert!(start.headers().get("location").is_none());
    assert!(start.text().await.expect("page").contains("not set up"));
    // A call without a connection gets no link that could not work, and is told why.
    let call = setup
        .api(
            Method::POST,
            "/v1/gmail/list_labels",
            Some(json!({"params": {}, "identity": "ivan"})),
        )
        .await;
    assert_eq!((call.status, call.code()), (403, "integration_not_connected"));
    assert!(call.body.get("action_url").is_none(), "{:?}", call.body);
    let message = call.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("once its sign-in is set up on this gateway"),
        "{message}"
    );
}

/// An OAuth session's base URL receives the user's tokens, and the app opening the session is
/// not the user: without the operator's list of allowed base URLs, a session may not name one
/// (API-key integrations may: the user types the secret on a page that names the host).
#[tokio::test]
async fn an_oauth_session_names_a_base_url_only_where_the_operator_lists_them() {
    let gateway = Gateway::start(
        std::path::Path::new(SLUICE),
        &[guests::GMAIL, guests::GITHUB],
        Options::default(),
    )
    .await;
    let key = gateway.create_key("test", "*").await;
    let open = |body: Value| {
        send(
            reqwest::Client::new()
                .post(format!("{}/v1/connect", gateway.url))
                .bearer_auth(&key)
                .json(&body),
        )
    };
    let refused =
        open(json!({"integration": "gmail", "identity": "frank", "baseUrl": "http://127.0.0.1:9"})).await;
    assert_eq!((refused.status, refused.code()), (400, "bad_request"));
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("`baseUrl`") && message.contains("`baseUrls` for `gmail`"),
        "{message}"
    );
    let api_key =
        open(json!({"integration": "github", "identity": "frank", "baseUrl": "http://127.0.0.1:9"})).await;
    assert_eq!(api_key.status, 201, "{:?}", api_key.body);
    // A URL's worth, not megabytes (it is stored and shown with the connection).
    let long = format!("http://127.0.0.1:9/{}", "a".repeat(2100));
    let too_long = open(json!({"integration": "github", "baseUrl": long})).await;
    assert_eq!((too_long.status, too_long.code()), (400, "bad_request"));
    assert!(
        too_long.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("longer than 2048 bytes"),
        "{:?}",
        too_long.body
    );
}

/// A gateway with the GitHub connector (an API-key integration), a fake GitHub, a key, and a
/// client that does not follow redirects: what the connect-form tests drive.
struct FormSetup {
    upstream: FakeUpstream,
    gateway: Gateway,
    key: String,
    client: reqwest::Client,
}

impl FormSetup {
    async fn new() -> Self {
        let upstream = FakeUpstream::start(crate::common::fake_github).await;
        let gateway = Gateway::start(
            std::path::Path::new(SLUICE),
            &[guests::GITHUB],
            Options::default(),
        )
        .await;
        let key = gateway.create_key("test", "*").await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            upstream,
            gateway,
            key,
            client,
        }
    }

    /// `POST /v1/connect` with `body`.
    async fn open(&self, body: Value) -> Answer {
        send(
            self.client
                .post(format!("{}/v1/connect", self.gateway.url))
                .bearer_auth(&self.key)
                .json(&body),
        )
        .await
    }
}

/// The anti-forgery token in a connect form's HTML.
fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field")
        .to_owned()
}

/// User `42` and organization `42` are two tenants: a connect flow for the user never replaces
/// the organization's credential, and a call naming the identity's type uses that kind's
/// connection only (one naming the identity alone cannot tell them apart).
#[tokio::test]
async fn one_identity_of_two_kinds_is_two_tenants() {
    let setup = FormSetup::new().await;
    let base_url = setup.upstream.url();
    let api = |method: Method, path: &str, body: Option<Value>| {
        let mut request = setup
            .client
            .request(method, format!("{}{path}", setup.gateway.url))
            .bearer_auth(&setup.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request)
    };
    let (org_secret, user_secret) = ("ghp_orgSECRETfortytwo111", "ghp_userSECRETfortytwo222");
    let organization = api(
        Method::POST,
        "/v1/vault/connections",
        Some(json!({
            "platform": "github", "secret": org_secret, "identity": "42",
            "identityType": "organization", "baseUrl": base_url
        })),
    )
    .await;
    assert_eq!(organization.status, 201, "{:?}", organization.body);
    let organization_key = organization.body["key"].as_str().expect("key").to_owned();

    let created = setup
        .open(json!({"integration": "github", "identity": "42", "identityType": "user", "baseUrl": base_url}))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let url = created.body["url"].as_str().expect("url").to_owned();
    let html = setup
        .client
        .get(&url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let saved = setup
        .client
        .post(&url)
        .form(&[("secret", user_secret), ("csrf", csrf_of(&html).as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(saved.status(), 200);
    let session_path = format!("/v1/connect/{}", created.body["id"].as_str().expect("id"));
    let session = api(Method::GET, &session_path, None).await;
    assert_eq!(session.body["status"], "connected", "{:?}", session.body);
    let user_key = session.body["connectionKey"].as_str().expect("connection key");
    assert_ne!(
        user_key, organization_key,
        "the user's flow made a connection of its own"
    );

    let call = |selector: Value| {
        let mut body = json!({"params": {"owner": "acme", "repo": "webapp"}});
        body.as_object_mut()
            .expect("object")
            .extend(selector.as_object().expect("selector").clone());
        api(Method::POST, "/v1/github/get_repo", Some(body))
    };
    let sent_bearer = || {
        let requests = setup.upstream.requests();
        let last = requests.last().expect("an upstream request");
        last.header("authorization").unwrap_or_default().to_owned()
    };
    let as_user = call(json!({"identity": "42", "identity_type": "user"})).await;
    assert_eq!(as_user.body["status"], 200, "{:?}", as_user.body);
    assert_eq!(sent_bearer(), format!("Bearer {user_secret}"));
    // The vault API's spelling is taken too; the organization's credential is untouched.
    let as_organization = call(json!({"identity": "42", "identityType": "organization"})).await;
    assert_eq!(as_organization.body["status"], 200, "{:?}", as_organization.body);
    assert_eq!(sent_bearer(), format!("Bearer {org_secret}"));

    // The identity alone cannot tell the two apart; a type without an identity, or one that
    // is no kind of owner, is a mistake; a kind with no connection yet gets a link that
    // connects one of that kind.
    let mut as_team = None;
    for (selector, refusal) in [
        (json!({"identity": "42"}), (400, "ambiguous_connection")),
        (json!({"identity_type": "user"}), (400, "bad_request")),
        (
            json!({"identity": "42", "identity_type": "person"}),
            (400, "bad_request"),
        ),
        (
            json!({"identity": "42", "identity_type": "team"}),
            (403, "integration_not_connected"),
        ),
    ] {
        let answer = call(selector.clone()).await;
        assert_eq!(
            (answer.status, answer.code()),
            refusal,
            "{selector}: {:?}",
            answer.body
        );
        as_team = Some(answer);
    }
    let as_team = as_team.expect("the last refusal");
    let team_session = as_team.body["connect_session_id"].as_str().expect("session id");
    let team_session = api(Method::GET, &format!("/v1/connect/{team_session}"), None).await;
    assert_eq!(
        (&team_session.body["identity"], &team_session.body["identityType"]),
        (&json!("42"), &json!("team"))
    );
}

/// An API-key form whose session has a `returnUrl` sends the user back to the app once the key
/// is saved, and its page lets the post go there (browsers hold a post's redirect to the
/// page's `form-action`).
#[tokio::test]
async fn an_api_key_form_returns_the_user_to_the_app() {
    let setup = FormSetup::new().await;
    let created = setup
        .open(json!({
            "integration": "github", "identity": "uma", "baseUrl": setup.upstream.url(),
            "returnUrl": "https://app.example/connected#done"
        }))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let url = created.body["url"].as_str().expect("url").to_owned();
    let page = setup.client.get(&url).send().await.expect("page");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        policy.contains("form-action 'self' https://app.example;"),
        "{policy}"
    );
    let csrf = csrf_of(&page.text().await.expect("html"));
    let post_form = || {
        setup
            .client
            .post(&url)
            .form(&[("secret", "ghp_returnSECRET123456"), ("csrf", csrf.as_str())])
            .send()
    };
    let saved = post_form().await.expect("post");
    assert_eq!(saved.status(), 303);
    let back = url::Url::parse(saved.headers()["location"].to_str().expect("location")).expect("url");
    assert_eq!(back.origin().ascii_serialization(), "https://app.example");
    assert_eq!(back.fragment(), Some("done"));
    let query: HashMap<String, String> = back.query_pairs().into_owned().collect();
    assert_eq!(query["status"], "connected");
    assert_eq!(
        query["connectSessionId"],
        created.body["id"].as_str().expect("id")
    );
    let call = send(
        setup
            .client
            .post(format!("{}/v1/github/get_repo", setup.gateway.url))
            .bearer_auth(&setup.key)
            .json(&json!({"params": {"owner": "acme", "repo": "webapp"}, "connection_key": query["connectionKey"]})),
    )
    .await;
    assert_eq!(call.body["status"], 200, "{:?}", call.body);
    // Posted twice (or opened again), the finished session sends the user back again.
    let again = post_form().await.expect("post");
    assert_eq!(again.status(), 303);
    assert_eq!(again.headers()["location"], saved.headers()["location"]);
    // A page without a return URL keeps its own form target only.
    let plain = setup
        .open(json!({"integration": "github", "identity": "vic"}))
        .await;
    let plain_page = setup
        .client
        .get(plain.body["url"].as_str().expect("url"))
        .send()
        .await
        .expect("page");
    let policy = plain_page.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(policy.contains("form-action 'self';"), "{policy}");
}

#[tokio::test]
async fn api_key_integrations_connect_through_a_csrf_protected_form() {
    let setup = FormSetup::new().await;
    let FormSetup {
        upstream,
        gateway,
        key,
        client,
    } = &setup;
    let created = setup
        .open(json!({"integration": "github", "identity": "zoe", "baseUrl": upstream.url()}))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let url = created.body["url"].as_str().expect("url").to_owned();
    let page = client.get(&url).send().await.expect("page");
    // The form's own post must carry its origin (`no-referrer` would make it `null`); the
    // page's address, with its token, still goes to no other site.
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    let html = page.text().await.expect("html");
    assert!(html.contains("type=\"password\""), "{html}");
    // The user is told where the credential will go: the session's base URL, chosen by the app
    // (scheme and port included: here plain http on a loopback port).
    let destination = url::Url::parse(&upstream.url()).expect("upstream url");
    assert!(
        html.contains(&format!(
            "sent only to <b id=\"destination\">{}</b>",
            destination.origin().ascii_serialization()
        )),
        "{html}"
    );
    let csrf = csrf_of(&html);

    let token = "ghp_formSECRETtoken987654321";
    // A post without the form token, or made by another site, is refused.
    for (fields, site) in [
        (vec![("secret", token)], "same-origin"),
        (vec![("secret", token), ("csrf", "forged")], "same-origin"),
        (vec![("secret", token), ("csrf", csrf.as_str())], "cross-site"),
    ] {
        let refused = client
            .post(&url)
            .header("sec-fetch-site", site)
            .form(&fields)
            .send()
            .await
            .expect("post");
        assert_eq!(refused.status(), 403, "{fields:?} {site}");
    }
    // Browsers that send no Sec-Fetch-Site still say `Origin`.
    for origin in ["https://evil.example", "null"] {
        let refused = client
            .post(&url)
            .header("origin", origin)
            .form(&[("secret", token), ("csrf", csrf.as_str())])
            .send()
            .await
            .expect("post");
        assert_eq!(refused.status(), 403, "Origin: {origin}");
    }
    // What a browser would not send still gets a page, not the API's JSON: a post that is no
    // form, and the sign-in route of an integration that connects with a key.
    let not_a_form = client.post(&url).body("secret=x").send().await.expect("post");
    assert_eq!(not_a_form.status(), 415);
    assert!(
        not_a_form.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
    let sign_in = client
        .get(format!("{url}/authorize"))
        .send()
        .await
        .expect("authorize");
    assert_eq!(sign_in.status(), 400);
    assert!(
        sign_in
            .text()
            .await
            .expect("page")
            .contains("connects with a key")
    );
    let empty = client
        .post(&url)
        .form(&[("secret", "  "), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(empty.status(), 400);
    let short = client
        .post(&url)
        .form(&[("secret", "abcd"), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(short.status(), 400);
    assert!(short.text().await.expect("page").contains("too short"));
    let saved = client
        .post(&url)
        .header("sec-fetch-site", "same-origin")
        .form(&[("secret", token), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(saved.status(), 200);
    assert!(saved.text().await.expect("page").contains("GitHub connected"));
    let again = client.get(&url).send().await.expect("page");
    assert!(again.text().await.expect("page").contains("Already connected"));

    // The new connection has the session's base URL and works with the stored key.
    let connections = send(
        client
            .get(format!("{}/v1/vault/connections?identity=zoe", gateway.url))
            .bearer_auth(key),
    )
    .await;
    let base_url = url::Url::parse(&upstream.url()).expect("upstream URL");
    assert_eq!(connections.body["rows"][0]["baseUrl"], base_url.as_str());
    let call = send(
        client
            .post(format!("{}/v1/github/get_repo", gateway.url))
            .bearer_auth(key)
            .json(&json!({"params": {"owner": "acme", "repo": "webapp"}, "identity": "zoe"})),
    )
    .await;
    assert_eq!(call.status, 200, "{:?}", call.body);
    let seen = upstream.requests();
    assert_eq!(
        seen.last().and_then(|r| r.header("authorization")),
        Some(format!("Bearer {token}").as_str())
    );
    assert!(
        !gateway.output().contains(token),
        "the form's secret leaked into the output"
    );

    // Reconnecting zoe's connection: the page names where her connection sends the credential
    // (its base URL, not the connector's default), and the session is hers.
    let zoe = connections.body["rows"][0]["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let reconnect = send(
        client
            .post(format!("{}/v1/connect", gateway.url))
            .bearer_auth(key)
            .json(&json!({"integration": "github", "connectionKey": zoe})),
    )
    .await;
    assert_eq!(reconnect.status, 201, "{:?}", reconnect.body);
    assert_eq!(reconnect.body["identity"], "zoe", "{:?}", reconnect.body);
    let page = client
        .get(reconnect.body["url"].as_str().expect("url"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains(&format!(
            "sent only to <b id=\"destination\">{}</b>",
            base_url.origin().ascii_serialization()
        )),
        "{page}"
    );
    let someone_else = send(
        client
            .post(format!("{}/v1/connect", gateway.url))
            .bearer_auth(key)
            .json(&json!({"integration": "github", "connectionKey": zoe, "identity": "mallory"})),
    )
    .await;
    assert_eq!((someone_else.status, someone_else.code()), (400, "bad_request"));
    // An inactive connection is not reconnected (calls could not use it): it is activated first.
    let set_active = |active: bool| {
        send(
            client
                .patch(format!("{}/v1/vault/connections/{zoe}", gateway.url))
                .bearer_auth(key)
                .json(&json!({"active": active})),
        )
    };
    assert_eq!(set_active(false).await.status, 200);
    let inactive = send(
        client
            .post(format!("{}/v1/connect", gateway.url))
            .bearer_auth(key)
            .json(&json!({"integration": "github", "connectionKey": zoe})),
    )
    .await;
    assert_eq!((inactive.status, inactive.code()), (400, "bad_request"));
    let says = inactive.body["message"].as_str().unwrap_or_default();
    assert!(
        says.contains("inactive") && says.contains("\"active\": true"),
        "{says}"
    );
    assert_eq!(set_active(true).await.status, 200);
    // So does a session for zoe's identity that names no base URL: it updates her connection.
    let for_zoe = setup
        .open(json!({"integration": "github", "identity": "zoe"}))
        .await;
    let page = page_of(client, &for_zoe).await;
    assert!(
        page.contains(&format!(
            "sent only to <b id=\"destination\">{}</b>",
            base_url.origin().ascii_serialization()
        )),
        "{page}"
    );

    // A page whose destination changed before its post (the identity got a connection with a
    // base URL meanwhile) does not send the credential where the user was not shown.
    let for_yara = setup
        .open(json!({"integration": "github", "identity": "yara"}))
        .await;
    let page = page_of(client, &for_yara).await;
    assert!(
        page.contains("<b id=\"destination\">https://api.github.com</b>"),
        "{page}"
    );
    let made = send(
        client
            .post(format!("{}/v1/vault/connections", gateway.url))
            .bearer_auth(key)
            .json(
                &json!({"platform": "github", "secret": "ghp_first_key_1", "identity": "yara",
                          "baseUrl": upstream.url()}),
            ),
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let stale = post_secret(client, &for_yara, &page, "ghp_unseen_destination").await;
    assert_eq!(stale, 403);
    let status = send(
        client
            .get(format!(
                "{}/v1/connect/{}",
                gateway.url,
                for_yara.body["id"].as_str().expect("id")
            ))
            .bearer_auth(key),
    )
    .await;
    assert_eq!(status.body["status"], "pending", "{:?}", status.body);
}

/// Post `secret` with the form token of `html`, the page of `session`; the response's status.
async fn post_secret(client: &reqwest::Client, session: &Answer, html: &str, secret: &str) -> u16 {
    client
        .post(session.body["url"].as_str().expect("url"))
        .form(&[("secret", secret), ("csrf", csrf_of(html).as_str())])
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

/// Open `session`'s page and post `secret` in its form; the response's status.
async fn connect_with(client: &reqwest::Client, session: &Answer, secret: &str) -> u16 {
    let html = page_of(client, session).await;
    post_secret(client, session, &html, secret).await
}

#[tokio::test]
async fn connect_sessions_update_the_right_connection_and_can_be_cancelled() {
    let setup = FormSetup::new().await;
    let FormSetup {
        upstream,
        gateway,
        key,
        client,
    } = &setup;
    let session_url = |session: &Answer| {
        let id = session.body["id"].as_str().expect("id");
        format!("{}/v1/connect/{id}", gateway.url)
    };
    let status_of = |session: &Answer| send(client.get(session_url(session)).bearer_auth(key));
    let cancel = |session: &Answer| send(client.delete(session_url(session)).bearer_auth(key));
    // How many connections the vault lists for `query`.
    let total_of = |query: &str| {
        let listed = client
            .get(format!("{}/v1/vault/connections?{query}", gateway.url))
            .bearer_auth(key);
        async move {
            let listed = send(listed).await;
            assert_eq!(listed.status, 200, "{:?}", listed.body);
            listed.body["total"].clone()
        }
    };

    // `null` is not "no identity": the app meant someone and the session must not be the key
    // owner's.
    let null_identity = setup
        .open(json!({"integration": "github", "identity": null}))
        .await;
    assert_eq!((null_identity.status, null_identity.code()), (400, "bad_request"));
    assert!(
        message_of(&null_identity).contains("identity"),
        "{:?}",
        null_identity.body
    );

    // Two sessions without an identity both connect the key owner's one connection: the second
    // replaces the first's credential rather than adding a connection calls could not pick.
    let mut connection_keys = Vec::new();
    for secret in ["ghp_ownerFIRST_123456", "ghp_ownerSECOND_123456"] {
        let session = setup
            .open(json!({"integration": "github", "baseUrl": upstream.url()}))
            .await;
        assert_eq!(session.status, 201, "{:?}", session.body);
        assert_eq!(connect_with(client, &session, secret).await, 200);
        let ended = status_of(&session).await;
        assert_eq!(ended.body["status"], "connected", "{:?}", ended.body);
        connection_keys.push(ended.body["connectionKey"].clone());
    }
    assert_eq!(connection_keys[0], connection_keys[1]);
    assert_eq!(total_of("platform=github").await, 1);
    let call = send(
        client
            .post(format!("{}/v1/github/get_repo", gateway.url))
            .bearer_auth(key)
            .json(&json!({"params": {"owner": "acme", "repo": "webapp"}})),
    )
    .await;
    assert_eq!(call.body["status"], 200, "{:?}", call.body);
    assert_eq!(
        upstream.requests().last().and_then(|r| r.header("authorization")),
        Some("Bearer ghp_ownerSECOND_123456")
    );

    // A reconnect link for a connection the app removed meanwhile stores nothing.
    let owner_key = connection_keys[0].as_str().expect("key").to_owned();
    let reconnect = setup
        .open(json!({"integration": "github", "connectionKey": owner_key}))
        .await;
    assert_eq!(reconnect.status, 201, "{:?}", reconnect.body);
    let removed = send(
        client
            .delete(format!("{}/v1/vault/connections/{owner_key}", gateway.url))
            .bearer_auth(key),
    )
    .await;
    assert!(removed.status < 300, "{:?}", removed.body);
    let page = client
        .get(reconnect.body["url"].as_str().expect("url"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 410);
    assert!(page.text().await.expect("html").contains("was removed"));
    let ended = status_of(&reconnect).await;
    assert_eq!(
        (&ended.body["status"], &ended.body["errorCode"]),
        (&json!("failed"), &json!("connection_removed")),
        "{:?}",
        ended.body
    );
    assert_eq!(total_of("platform=github").await, 0);

    // The app can withdraw a link it handed out: the page then refuses the credential, and
    // cancelling again, or cancelling a finished session, changes nothing.
    let withdrawn = setup
        .open(json!({"integration": "github", "identity": "wes", "baseUrl": upstream.url()}))
        .await;
    let html = page_of(client, &withdrawn).await;
    let cancelled = cancel(&withdrawn).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(
        (&cancelled.body["status"], &cancelled.body["errorCode"]),
        (&json!("failed"), &json!("cancelled")),
        "{:?}",
        cancelled.body
    );
    let late = post_secret(client, &withdrawn, &html, "ghp_tooLATE_1234567").await;
    assert_eq!(late, 410);
    assert_eq!(cancel(&withdrawn).await.body, cancelled.body);
    assert_eq!(total_of("identity=wes").await, 0);

    let done = setup
        .open(json!({"integration": "github", "identity": "xia", "baseUrl": upstream.url()}))
        .await;
    assert_eq!(connect_with(client, &done, "ghp_xiaKEY_1234567").await, 200);
    let kept = cancel(&done).await;
    assert_eq!(kept.body["status"], "connected", "{:?}", kept.body);

    let unknown = send(
        client
            .delete(format!("{}/v1/connect/cs_nosuchsession", gateway.url))
            .bearer_auth(key),
    )
    .await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
}

async fn page_of(client: &reqwest::Client, session: &Answer) -> String {
    client
        .get(session.body["url"].as_str().expect("url"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html")
}

#[tokio::test]
async fn calls_without_a_connection_get_a_working_connect_link() {
    let setup = OAuthSetup::new(&[]).await;
    let answer = setup
        .api(
            Method::POST,
            "/v1/gmail/list_labels",
            Some(json!({"params": {}, "identity": "judy"})),
        )
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.code(), "integration_not_connected");
    let action_url = answer.body["action_url"].as_str().expect("action_url");
    let (status, page) = setup.walk_flow(action_url).await;
    assert_eq!(status, 200, "{page}");
    let listed = setup
        .api(Method::GET, "/v1/vault/connections?identity=judy", None)
        .await;
    assert_eq!(
        listed.body["total"], 1,
        "the link connected the identity that asked: {:?}",
        listed.body
    );
}

#[tokio::test]
async fn a_rotated_refresh_token_survives_a_crash_right_after_the_refresh() {
    let mut setup = OAuthSetup::new(&[]).await;
    setup.connect("mallory").await;
    // The refresh rotates the refresh token; the provider forgets the old one at once.
    setup.revoke_access_tokens(RefreshMode::Grant);
    let refreshed = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    setup.gateway.kill_and_restart().await;
    // Only the rotated refresh token works now: it must have been on disk before the answer.
    setup.revoke_access_tokens(RefreshMode::Grant);
    let after_crash = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(after_crash.status, 200, "{:?}", after_crash.body);
    assert_eq!(setup.google.lock().expect("state").refresh_calls, 2);
    setup.assert_no_secret_logged();
}

/// A caller that hangs up while the provider is still answering the refresh its call started
/// loses nothing: the call is cut off and logged as `client_closed`, but the refresh runs on —
/// once the provider answered, the new tokens are stored, the next call uses the new access
/// token without refreshing again, and the rotated refresh token is the one kept.
#[tokio::test]
async fn a_caller_hanging_up_mid_refresh_does_not_lose_the_rotated_token() {
    let setup = OAuthSetup::new(&[]).await;
    setup.connect("nina").await;
    setup.revoke_access_tokens(RefreshMode::SlowGrant);
    let request = crate::common::raw_request(
        &setup.gateway.url,
        &setup.key,
        "POST /v1/gmail/list_labels HTTP/1.1",
        r#"{"params": {}, "identity": "nina"}"#,
    );
    let refreshing = || setup.google.lock().expect("state").refresh_calls == 1;
    crate::common::hang_up_once(&setup.gateway.url, request.as_bytes(), refreshing).await;

    let row = crate::common::wait_for_log_row(
        &setup.client,
        &setup.gateway.url,
        &setup.key,
        "outcome=client_closed",
    )
    .await
    .expect("the abandoned call was logged");
    assert_eq!(row["httpStatus"], 499, "{row}");

    setup.google.lock().expect("state").refresh_mode = RefreshMode::Grant;
    let next = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(next.status, 200, "{:?}", next.body);
    assert_eq!(
        setup.google.lock().expect("state").refresh_calls,
        1,
        "the next call used the access token the abandoned refresh got"
    );
    // Only the rotated refresh token works now.
    setup.revoke_access_tokens(RefreshMode::Grant);
    let rotated = setup.execute("list_labels", json!({"params": {}})).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert_eq!(setup.google.lock().expect("state").refresh_calls, 2);
    setup.assert_no_secret_logged();
}

#[tokio::test]
async fn operators_manage_oauth_apps_through_the_admin_api() {
    use sluice_fixtures::gateway::TEST_ADMIN_KEY;
    let setup = OAuthSetup::with_options(Options {
        admin_api: true,
        ..Options::default()
    })
    .await;
    let admin = |method: Method, path: &str, body: Option<Value>| {
        let mut request = setup
            .client
            .request(method, format!("{}{path}", setup.gateway.url))
            .bearer_auth(TEST_ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request)
    };
    let listed = admin(Method::GET, "/v1/admin/oauth-apps", None).await;
    assert_eq!(
        listed.body["rows"][0]["clientId"], CLIENT_ID,
        "the CLI's app is listed"
    );
    let replaced = admin(
        Method::PUT,
        "/v1/admin/oauth-apps/gmail",
        Some(json!({"clientId": "other-client", "clientSecret": "other-secret-value", "scopes": ["extra.scope"]})),
    )
    .await;
    assert_eq!(replaced.status, 200, "{:?}", replaced.body);
    let shown = admin(Method::GET, "/v1/admin/oauth-apps/gmail", None).await;
    assert_eq!(shown.body["clientId"], "other-client");
    assert_eq!(shown.body["scopes"][0], "extra.scope");
    assert!(
        !shown.body.to_string().contains("other-secret-value"),
        "secrets are write-only"
    );
    for (path, body, code) in [
        (
            "/v1/admin/oauth-apps/github",
            json!({"clientId": "a", "clientSecret": "client-secret-b"}),
            "bad_request",
        ),
        (
            "/v1/admin/oauth-apps/nope",
            json!({"clientId": "a", "clientSecret": "client-secret-b"}),
            "not_found",
        ),
        (
            "/v1/admin/oauth-apps/gmail",
            json!({"clientId": "", "clientSecret": "client-secret-b"}),
            "bad_request",
        ),
        (
            "/v1/admin/oauth-apps/gmail",
            json!({"clientId": "a", "clientSecret": "client-secret-b", "tokenUrl": "ftp://x"}),
            "bad_request",
        ),
        (
            "/v1/admin/oauth-apps/gmail",
            json!({"clientId": "a", "clientSecret": "b"}),
            "bad_request",
        ),
    ] {
        let refused = admin(Method::PUT, path, Some(body.clone())).await;
        assert_eq!(refused.code(), code, "{path} {body}");
    }
    let caller = setup.api(Method::GET, "/v1/admin/oauth-apps", None).await;
    assert_eq!(caller.code(), "unauthorized", "an API key is not the admin key");
    let deleted = admin(Method::DELETE, "/v1/admin/oauth-apps/gmail", None).await;
    assert_eq!(deleted.status, 200);
    let gone = admin(Method::DELETE, "/v1/admin/oauth-apps/gmail", None).await;
    assert_eq!(gone.code(), "not_found");
    assert!(!setup.gateway.output().contains("other-secret-value"));
}
