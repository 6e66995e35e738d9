//! The connect page in a real headless Chromium, driven over WebDriver by chromedriver:
//! open the connect link, go through the fake Google's consent page, land on the success
//! page, then call the connector with the new connection.
//!
//! Debian's `chromium` and `chromium-driver` packages provide the browser (CI installs them).
//! Without them the test is skipped with a loud message, except under CI, where it fails.

use crate::oauth::OAuthSetup;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key under which an element reference comes back.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one headless Chromium session.
struct Browser {
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    session_url: String,
    client: reqwest::Client,
}

impl Browser {
    /// Start the browser, or `None` (after saying so) when it is not installed here.
    async fn start() -> Option<Self> {
        if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the browser test: install the `chromium` and `chromium-driver` packages"
            );
            eprintln!(
                "SKIPPED: the connect-page browser test needs {CHROMIUM} and {CHROMEDRIVER} \
                 (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if let Ok(response) = ready
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        // Without the background-networking flags Chromium keeps trying to reach Google.
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let created: Value = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session reply");
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused the session: {created}"));
        Some(Self {
            session_url: format!("{base}/session/{id}"),
            _driver: driver,
            _profile: profile,
            client,
        })
    }

    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, format!("{}{path}", self.session_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request
            .send()
            .await
            .expect("webdriver command")
            .json()
            .await
            .expect("webdriver reply");
        assert!(reply["value"]["error"].is_null(), "webdriver {path}: {reply}");
        reply["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The WebDriver reference of the element matching `css`.
    async fn element(&self, css: &str) -> String {
        let element = self
            .command(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        element[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element `{css}`: {element}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command(Method::POST, &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    /// Type `text` into the element matching `css`.
    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The address the browser is at.
    async fn current_url(&self) -> String {
        let url = self.command(Method::GET, "/url", None).await;
        url.as_str().unwrap_or_default().to_owned()
    }

    /// Wait until the page's HTML contains `text`; returns it.
    async fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let source = self.command(Method::GET, "/source", None).await;
            let html = source.as_str().unwrap_or_default().to_owned();
            if html.contains(text) {
                return html;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed `{text}`: {html}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn close(self) {
        let _ = self.client.delete(&self.session_url).send().await;
    }
}

#[tokio::test]
async fn an_end_user_connects_gmail_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let setup = OAuthSetup::new(&[]).await;
    let (id, url) = setup.open_session("kim").await;

    browser.goto(&url).await;
    browser.wait_for("Continue to Gmail").await;
    browser.click("#continue").await;
    browser.wait_for("Allow Sluice to use your Gmail?").await;
    browser.click("#allow").await;
    let done = browser.wait_for("Gmail connected").await;
    assert!(done.contains("You can close this window"), "{done}");
    browser.close().await;

    let polled = setup.api(Method::GET, &format!("/v1/connect/{id}"), None).await;
    assert_eq!(polled.body["status"], "connected", "{:?}", polled.body);
    assert!(polled.body["connectionKey"].is_string(), "{:?}", polled.body);
    let labels = setup
        .execute("list_labels", json!({"params": {}, "identity": "kim"}))
        .await;
    assert_eq!(labels.status, 200, "{:?}", labels.body);
    assert_eq!(labels.body["data"]["labels"][0]["id"], "INBOX");
    setup.assert_no_secret_logged();
}

/// An API-key integration's form, with a session that names the app's page to return to: the
/// browser posts the key and lands back on the app (a post's redirect must pass the page's
/// `form-action`, which only a real browser enforces), told that the account is connected.
#[tokio::test]
async fn an_end_user_saves_a_key_and_returns_to_the_app_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let setup = crate::common::Setup::new().await;
    let app = sluice_fixtures::FakeUpstream::start(|_| {
        sluice_fixtures::Reply::text(200, "Welcome back to the app")
    })
    .await;
    let return_url = format!("{}/integrations", app.url());
    let created = setup
        .api(
            Method::POST,
            "/v1/connect",
            Some(json!({
                "integration": "github", "identity": "wes",
                "baseUrl": setup.upstream.url(), "returnUrl": return_url
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);

    browser.goto(created.body["url"].as_str().expect("url")).await;
    browser.wait_for("Connect GitHub").await;
    browser.type_into("#secret", "ghp_browserSECRET0987654321").await;
    browser.click("#save").await;
    browser.wait_for("Welcome back to the app").await;
    let landed = url::Url::parse(&browser.current_url().await).expect("a URL");
    browser.close().await;
    assert_eq!(landed.path(), "/integrations");
    let query: std::collections::HashMap<String, String> = landed.query_pairs().into_owned().collect();
    assert_eq!(query["status"], "connected", "{landed}");
    assert_eq!(
        query["connectSessionId"],
        created.body["id"].as_str().expect("id")
    );
    let call = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "webapp"}, "identity": "wes"}),
        )
        .await;
    assert_eq!(call.body["status"], 200, "{:?}", call.body);
}
