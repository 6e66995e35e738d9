//! Test a connector with `cargo test`: natively, without a gateway, a network or WebAssembly.
//!
//! [`run`] calls the connector's [`Connector::invoke`] as the gateway would, while a fake
//! upstream of the test's own answers every request the connector sends through
//! [`crate::http`]. It hands back what came out: the action's result, the requests sent (in
//! order) and the log lines written.
//!
//! ```
//! use sluice_sdk::testing::{self, Reply};
//! use sluice_sdk::{Connector, Error, Manifest, Output, Params, http, json};
//!
//! struct Weather;
//!
//! #[derive(serde::Deserialize)]
//! struct Forecast {
//!     city: String,
//! }
//!
//! impl Connector for Weather {
//!     fn describe() -> Manifest {
//!         Manifest::new("weather", "Weather", "0.1.0")
//!     }
//!
//!     fn invoke(endpoint: &str, params: Params) -> Result<Output, Error> {
//!         let Forecast { city } = params.parse()?;
//!         Ok(http::get("/v1/forecast").query("city", &city).send()?.into())
//!     }
//! }
//!
//! let run = testing::run::<Weather>("forecast", json!({"city": "Oslo"}), |request| {
//!     assert_eq!(request.path(), "/v1/forecast");
//!     Reply::json(200, json!({"city": "Oslo", "celsius": -3}))
//! });
//! assert_eq!(run.status(), 200);
//! assert_eq!(run.data()["celsius"], -3);
//! assert_eq!(run.sent[0].query("city").as_deref(), Some("Oslo"));
//! ```
//!
//! The fake stands in for the upstream only. What the gateway itself does is not done here:
//! checking params against the action's schema, resolving a path against the base URL,
//! the allowed-hosts and header rules, injecting the credential, following redirects and the
//! size and time limits. A request is recorded as the connector wrote it (a path stays a
//! path); `sluice dev` runs the connector in the real gateway for the rest.
//!
//! Available on native targets only: in the component, requests go to the gateway.

use crate::bindings::sluice::connector::types::{
    Header, HttpError as WitHttpError, Level as WitLevel, Request, Response,
};
use crate::{Connector, Error, HttpError, Output, Params, Value};
use std::cell::RefCell;

/// A request the connector sent, as it wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The URL with its query: a path starting with `/`, or an absolute URL.
    pub url: String,
    /// The headers the connector set, in order.
    pub headers: Vec<(String, String)>,
    /// The body, if one was set.
    pub body: Option<Vec<u8>>,
}

impl Sent {
    /// The URL without its query.
    pub fn path(&self) -> &str {
        self.url.split_once('?').map_or(&self.url, |(path, _)| path)
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.url.split_once('?')?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body read as JSON. Panics, saying what was sent, when there is none or it is not
    /// JSON: a test asking for it expects a JSON body.
    pub fn json(&self) -> Value {
        let body = self.body.as_deref().unwrap_or_default();
        serde_json::from_slice(body).unwrap_or_else(|error| {
            panic!(
                "{} {} sent no JSON body ({error}): {:?}",
                self.method,
                self.url,
                String::from_utf8_lossy(body)
            )
        })
    }

    fn from_wit(request: &Request) -> Self {
        Self {
            method: request.method.clone(),
            url: request.url.clone(),
            headers: request
                .headers
                .iter()
                .map(|header| (header.name.clone(), header.value.clone()))
                .collect(),
            body: request.body.clone(),
        }
    }
}

/// What the fake upstream answers to one request: a response, or a failure to deliver one
/// (a timeout, a refused request) as the gateway would report it.
#[derive(Debug, Clone)]
pub struct Reply(Result<Response, HttpError>);

impl Reply {
    /// A response with `status` and `value` as its JSON body.
    pub fn json(status: u16, value: Value) -> Self {
        Self::bytes(status, "application/json", value.to_string())
    }

    /// A response with `status` and a plain-text body.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self::bytes(status, "text/plain; charset=utf-8", text.into())
    }

    /// A response with `status`, a body and its media type.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self(Ok(Response {
            status,
            headers: vec![Header {
                name: "content-type".into(),
                value: content_type.into(),
            }],
            body: body.into(),
        }))
    }

    /// No response: `send` returns `error` (e.g. `HttpError::Timeout`).
    pub fn fail(error: HttpError) -> Self {
        Self(Err(error))
    }

    /// Add a response header (a name may be given more than once, as `link` is).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Ok(response) = &mut self.0 {
            response.headers.push(Header {
                name: name.into(),
                value: value.into(),
            });
        }
        self
    }
}

/// The severity of a log line the connector wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine-grained diagnostics.
    Trace,
    /// Diagnostics for connector authors.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the connector recovered from.
    Warn,
    /// A failure.
    Error,
}

impl Level {
    fn from_wit(level: WitLevel) -> Self {
        match level {
            WitLevel::Trace => Self::Trace,
            WitLevel::Debug => Self::Debug,
            WitLevel::Info => Self::Info,
            WitLevel::Warn => Self::Warn,
            WitLevel::Error => Self::Error,
        }
    }
}

/// What one [`run`] of an action gave.
#[derive(Debug)]
pub struct Run {
    /// What `invoke` returned.
    pub result: Result<Output, Error>,
    /// Every request the connector sent, in order.
    pub sent: Vec<Sent>,
    /// Every log line the connector wrote, in order.
    pub logs: Vec<(Level, String)>,
}

impl Run {
    /// The output, what the gateway hands the caller; panics with the action's error if it
    /// failed.
    pub fn output(&self) -> &Output {
        match &self.result {
            Ok(output) => output,
            Err(error) => panic!("the action failed: {error}"),
        }
    }

    /// The output's status, the caller's `status`; panics if the action failed.
    pub fn status(&self) -> u16 {
        self.output().status
    }

    /// The output's body read as JSON, the caller's `data`; panics if the action failed or
    /// its body is not JSON.
    pub fn data(&self) -> Value {
        let body = &self.output().body;
        serde_json::from_slice(body).unwrap_or_else(|error| {
            panic!(
                "the output is not JSON ({error}): {:?}",
                String::from_utf8_lossy(body)
            )
        })
    }

    /// The action's error; panics if it succeeded.
    pub fn error(&self) -> &Error {
        match &self.result {
            Ok(output) => panic!("the action succeeded with status {}", output.status),
            Err(error) => error,
        }
    }
}

/// Run action `endpoint` of connector `C` with `params`, `upstream` answering every request it
/// sends, on this thread.
pub fn run<C: Connector>(
    endpoint: &str,
    params: Value,
    upstream: impl FnMut(&Sent) -> Reply + 'static,
) -> Run {
    let installed = Installed::new(Box::new(upstream));
    let result = C::invoke(endpoint, Params::from_json(params.to_string()));
    let fake = installed.finish();
    Run {
        result,
        sent: fake.sent,
        logs: fake.logs,
    }
}

/// The fake of the [`run`] under way on this thread.
struct Fake {
    upstream: Box<dyn FnMut(&Sent) -> Reply>,
    sent: Vec<Sent>,
    logs: Vec<(Level, String)>,
}

thread_local! {
    static FAKE: RefCell<Option<Fake>> = const { RefCell::new(None) };
}

/// Installs a fake for this thread and removes it when dropped, a panicking test included, so
/// that the next test on the thread starts clean.
struct Installed;

impl Installed {
    fn new(upstream: Box<dyn FnMut(&Sent) -> Reply>) -> Self {
        FAKE.with_borrow_mut(|fake| {
            assert!(
                fake.is_none(),
                "sluice_sdk::testing::run called inside another run"
            );
            *fake = Some(Fake {
                upstream,
                sent: Vec::new(),
                logs: Vec::new(),
            });
        });
        Self
    }

    fn finish(self) -> Fake {
        FAKE.with_borrow_mut(Option::take).expect("the fake of this run")
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        FAKE.with_borrow_mut(|fake| *fake = None);
    }
}

/// Natively, [`crate::http`] sends here: to the fake upstream of the [`run`] under way.
pub(crate) fn send(request: &Request) -> Result<Response, WitHttpError> {
    let sent = Sent::from_wit(request);
    // Taken out while it answers, so that the test's closure may do anything, even log.
    let Some(mut fake) = FAKE.with_borrow_mut(Option::take) else {
        panic!(
            "{} {} was sent outside sluice_sdk::testing::run: natively there is no gateway to send it",
            sent.method, sent.url
        );
    };
    let reply = (fake.upstream)(&sent);
    fake.sent.push(sent);
    FAKE.with_borrow_mut(|slot| *slot = Some(fake));
    reply.0.map_err(HttpError::into_wit)
}

/// Natively, [`crate::log`] writes here: to the [`run`] under way, else to stderr.
pub(crate) fn write(level: WitLevel, message: &str) {
    let level = Level::from_wit(level);
    let unrecorded = FAKE.with_borrow_mut(|fake| match fake {
        Some(fake) => {
            fake.logs.push((level, message.to_owned()));
            false
        }
        None => true,
    });
    if unrecorded {
        eprintln!("[{level:?}] {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::{Level, Reply, run};
    use crate::{Connector, Error, HttpError, Manifest, Output, Params, http, json, log};

    #[derive(serde::Deserialize)]
    struct NewTask {
        title: String,
    }

    /// Lists a project's tasks, following `link` pages, and creates one.
    struct Tasks;

    impl Connector for Tasks {
        fn describe() -> Manifest {
            Manifest::new("tasks", "Tasks", "0.1.0")
        }

        fn invoke(endpoint: &str, params: Params) -> Result<Output, Error> {
            match endpoint {
                "all_tasks" => {
                    let mut tasks = Vec::new();
                    let mut next = Some("/tasks?page=1".to_owned());
                    while let Some(url) = next.take() {
                        let page = http::get(url).send()?;
                        tasks.extend(page.json::<Vec<crate::Value>>()?);
                        next = page.header("x-next").map(str::to_owned);
                    }
                    log::info(&format!("{} tasks", tasks.len()));
                    Output::json(200, &tasks)
                }
                "create_task" => {
                    let NewTask { title } = params.parse()?;
                    let created = http::post("/tasks").json(&json!({"title": title}))?.send()?;
                    Ok(created.into())
                }
                other => Err(Error::unknown_endpoint(other)),
            }
        }
    }

    #[test]
    fn requests_go_to_the_fake_in_order_and_logs_are_kept() {
        let run = run::<Tasks>("all_tasks", json!({}), |request| {
            match request.query("page").as_deref() {
                Some("1") => Reply::json(200, json!([{"id": 1}])).header("x-next", "/tasks?page=2"),
                _ => Reply::json(200, json!([{"id": 2}])),
            }
        });
        assert_eq!(run.data(), json!([{"id": 1}, {"id": 2}]));
        let urls: Vec<&str> = run.sent.iter().map(|sent| sent.url.as_str()).collect();
        assert_eq!(urls, ["/tasks?page=1", "/tasks?page=2"]);
        assert_eq!(run.logs, [(Level::Info, "2 tasks".to_owned())]);
    }

    #[test]
    fn a_body_and_headers_are_recorded_and_the_upstream_status_passes_through() {
        let run = run::<Tasks>("create_task", json!({"title": "Write tests"}), |request| {
            Reply::json(201, json!({"id": 3, "title": request.json()["title"]}))
        });
        assert_eq!(
            (run.status(), run.data()["title"].as_str()),
            (201, Some("Write tests"))
        );
        let sent = &run.sent[0];
        assert_eq!((sent.method.as_str(), sent.path()), ("POST", "/tasks"));
        assert_eq!(sent.header("Content-Type"), Some("application/json"));
    }

    #[test]
    fn a_failed_send_and_bad_params_are_the_actions_errors() {
        let timeout = HttpError::Timeout("upstream took too long".into());
        let failed = run::<Tasks>("create_task", json!({"title": "x"}), move |_| {
            Reply::fail(timeout.clone())
        });
        assert!(
            matches!(failed.error(), Error::Http(HttpError::Timeout(_))),
            "{:?}",
            failed.result
        );
        let bad = run::<Tasks>("create_task", json!({"title": 7}), |_| {
            panic!("nothing is sent for bad params")
        });
        assert!(matches!(bad.error(), Error::BadParams(_)), "{:?}", bad.result);
        assert!(bad.sent.is_empty());
    }

    #[test]
    #[should_panic(expected = "sent outside sluice_sdk::testing::run")]
    fn a_request_outside_a_run_says_how_to_test() {
        let _ = http::get("/tasks").send();
    }

    /// A test that panics inside a run leaves no fake behind for the next one on its thread.
    #[test]
    fn a_panicking_run_leaves_the_thread_clean() {
        let panicked = std::panic::catch_unwind(|| {
            run::<Tasks>("all_tasks", json!({}), |_| panic!("the test's own assertion"))
        });
        assert!(panicked.is_err());
        let run = run::<Tasks>("all_tasks", json!({}), |_| Reply::json(200, json!([])));
        assert_eq!(run.data(), json!([]));
    }
}
