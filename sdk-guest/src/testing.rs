//! Test a connector with `cargo test`: natively, without a gateway, a network or WebAssembly.
//!
//! [`run`] calls the connector's [`Connector::invoke`] as the gateway would, while a fake
//! upstream of the test's own answers every request the connector sends through
//! [`crate::http`]. It hands back what came out: the action's result, the requests sent (in
//! order) and the log lines written.
//!
//! ```
//! use sluice_sdk::testing::{self, Reply};
//! use sluice_sdk::{Connector, Endpoint, Error, Manifest, Output, Params, http, json};
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
//!         Manifest::new("weather", "Weather", "0.1.0").endpoint(Endpoint::new("forecast", "GET", "/v1/forecast"))
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
//! [`examples`] lists the examples `describe` gives, to run each one.
//!
//! The fake stands in for the upstream only. What the gateway itself does is not done here
//! (beyond refusing to run an action `describe` does not declare, which the gateway never
//! calls): checking params against the action's schema, resolving a path against the base URL,
//! the allowed-hosts and header rules, injecting the credential, following redirects and the
//! size and time limits. A request is recorded as the connector wrote it (a path stays a
//! path); `sluice dev` runs the connector in the real gateway for the rest.
//!
//! The closure owns what it uses (`move`), as it outlives the call that installs it: what it
//! was asked is in [`Run::sent`], in order. It cannot send requests itself.
//!
//! Available on native targets only: in the component, requests go to the gateway.

use crate::bindings::sluice::connector::types::{
    Header, HttpError as WitHttpError, Level as WitLevel, Request, Response,
};
use crate::{Connector, Error, HttpError, Output, Params, Value};
use std::cell::{Cell, RefCell};

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
        self.query_all(name).into_iter().next()
    }

    /// Every value of query parameter `name`, percent-decoded, in order.
    pub fn query_all(&self, name: &str) -> Vec<String> {
        let without_fragment = self.url.split_once('#').map_or(self.url.as_str(), |(url, _)| url);
        let Some((_, query)) = without_fragment.split_once('?') else {
            return Vec::new();
        };
        form_urlencoded::parse(query.as_bytes())
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .collect()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as UTF-8 text (empty when there is none). Panics when it is not UTF-8.
    pub fn text(&self) -> &str {
        std::str::from_utf8(self.body.as_deref().unwrap_or_default()).unwrap_or_else(|error| {
            panic!(
                "{} {} sent a body that is not UTF-8: {error}",
                self.method, self.url
            )
        })
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

    /// A response with `status`, no body and no headers (a `204`, say).
    pub fn status(status: u16) -> Self {
        Self(Ok(Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }))
    }

    /// No response: `send` returns `error` (e.g. `HttpError::Timeout`).
    pub fn fail(error: HttpError) -> Self {
        Self(Err(error))
    }

    /// Add a response header (a name may be given more than once, as `link` is). Panics on a
    /// [`Reply::fail`], which has no response to carry it.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match &mut self.0 {
            Ok(response) => response.headers.push(Header {
                name: name.into(),
                value: value.into(),
            }),
            Err(error) => panic!("a failed reply ({error}) has no headers"),
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

    /// The caller's `data`, as the gateway makes it of the output: a JSON body (media type
    /// `application/json` or `…+json`) as that JSON, an empty body as `null`, anything else
    /// as a string (the gateway sends bytes that are no UTF-8 text as base64; here they are
    /// read lossily). Panics if the action failed.
    pub fn data(&self) -> Value {
        let output = self.output();
        let media = output
            .content_type
            .as_deref()
            .and_then(|content_type| content_type.split(';').next())
            .unwrap_or_default()
            .trim();
        let is_json = media.eq_ignore_ascii_case("application/json") || media.ends_with("+json");
        let json_text = output.body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&output.body);
        match serde_json::from_slice(json_text) {
            Ok(value) if is_json => value,
            _ if output.body.is_empty() => Value::Null,
            _ => Value::String(String::from_utf8_lossy(&output.body).into_owned()),
        }
    }

    /// The output's body as UTF-8 text; panics if the action failed or the body is no text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.output().body)
            .unwrap_or_else(|error| panic!("the output is not UTF-8 text: {error}"))
    }

    /// The action's error; panics if it succeeded.
    pub fn error(&self) -> &Error {
        match &self.result {
            Ok(output) => panic!("the action succeeded with status {}", output.status),
            Err(error) => error,
        }
    }
}

/// Run action `endpoint` of connector `C` with `params` (a JSON object, as the gateway always
/// passes), `upstream` answering every request it sends, on this thread. Panics if `describe`
/// does not declare `endpoint`: the gateway would never call it.
pub fn run<C: Connector>(
    endpoint: &str,
    params: Value,
    upstream: impl FnMut(&Sent) -> Reply + 'static,
) -> Run {
    let manifest = C::describe();
    if !manifest.endpoint_names().any(|name| name == endpoint) {
        let declared: Vec<&str> = manifest.endpoint_names().collect();
        panic!(
            "`{endpoint}` is not an endpoint {}'s describe() declares, so the gateway never calls it \
             (declared: {declared:?})",
            manifest.id()
        );
    }
    assert!(
        params.is_object(),
        "params must be a JSON object, as the gateway always passes: {params}"
    );
    let installed = Installed::new(Box::new(upstream));
    let result = C::invoke(endpoint, Params::from_json(params.to_string()));
    let fake = installed.finish();
    Run {
        result,
        sent: fake.sent,
        logs: fake.logs,
    }
}

/// Every example `C::describe()` gives: (endpoint, example title, params). Running each with
/// [`run`] checks that the examples callers and agents are shown still work.
pub fn examples<C: Connector>() -> Vec<(String, String, Value)> {
    C::describe()
        .examples()
        .map(|(endpoint, title, params)| (endpoint.to_owned(), title.to_owned(), params.clone()))
        .collect()
}

/// The fake of the [`run`] under way on this thread.
struct Fake {
    upstream: Box<dyn FnMut(&Sent) -> Reply>,
    sent: Vec<Sent>,
    logs: Vec<(Level, String)>,
}

thread_local! {
    static FAKE: RefCell<Option<Fake>> = const { RefCell::new(None) };
    /// Whether the fake's closure is answering now (the fake is out of `FAKE` meanwhile).
    static ANSWERING: Cell<bool> = const { Cell::new(false) };
}

/// Installs a fake for this thread and removes it when dropped, a panicking test included, so
/// that the next test on the thread starts clean.
struct Installed;

impl Installed {
    fn new(upstream: Box<dyn FnMut(&Sent) -> Reply>) -> Self {
        FAKE.with_borrow_mut(|fake| {
            assert!(
                fake.is_none() && !ANSWERING.get(),
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
        ANSWERING.set(false);
    }
}

/// Natively, [`crate::http`] sends here: to the fake upstream of the [`run`] under way.
pub(crate) fn send(request: &Request) -> Result<Response, WitHttpError> {
    let sent = Sent::from_wit(request);
    // Taken out while it answers, so that the test's closure may do anything, even log.
    let Some(mut fake) = FAKE.with_borrow_mut(Option::take) else {
        if ANSWERING.get() {
            panic!(
                "{} {} was sent by the fake upstream's closure: it answers requests, it cannot send them",
                sent.method, sent.url
            );
        }
        panic!(
            "{} {} was sent outside sluice_sdk::testing::run: natively there is no gateway to send it",
            sent.method, sent.url
        );
    };
    ANSWERING.set(true);
    let reply = (fake.upstream)(&sent);
    ANSWERING.set(false);
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
    use super::{Level, Reply, examples, run};
    use crate::{Connector, Endpoint, Error, HttpError, Manifest, Output, Params, http, json, log};

    #[derive(serde::Deserialize)]
    struct NewTask {
        title: String,
    }

    /// Lists a project's tasks, following `link` pages, and creates one.
    struct Tasks;

    impl Connector for Tasks {
        fn describe() -> Manifest {
            Manifest::new("tasks", "Tasks", "0.1.0")
                .endpoint(Endpoint::new("all_tasks", "GET", "/tasks"))
                .endpoint(
                    Endpoint::new("create_task", "POST", "/tasks")
                        .example("A task", json!({"title": "Write"})),
                )
                .endpoint(Endpoint::new("delete_task", "DELETE", "/tasks/{id}"))
                .endpoint(Endpoint::new("summary", "GET", "/"))
        }

        fn invoke(endpoint: &str, params: Params) -> Result<Output, Error> {
            match endpoint {
                "all_tasks" => {
                    let mut tasks = Vec::new();
                    let mut next = Some("/tasks?page=1".to_owned());
                    while let Some(url) = next.take() {
                        let page = http::get(url).send()?;
                        tasks.extend(page.json::<Vec<crate::Value>>()?);
                        next = page.link("next").map(str::to_owned);
                    }
                    log::info(&format!("{} tasks", tasks.len()));
                    Output::json(200, &tasks)
                }
                "create_task" => {
                    let NewTask { title } = params.parse()?;
                    let created = http::post("/tasks").json(&json!({"title": title}))?.send()?;
                    Ok(created.into())
                }
                "delete_task" => Ok(http::delete("/tasks/1").send()?.into()),
                "summary" => Ok(Output::text(200, "123")),
                other => Err(Error::unknown_endpoint(other)),
            }
        }
    }

    /// `data` is what the caller gets: JSON only where the media type says so, an empty body
    /// `null`, anything else a string.
    #[test]
    fn data_is_made_as_the_gateway_makes_it() {
        let deleted = run::<Tasks>("delete_task", json!({}), |_| Reply::status(204));
        assert_eq!((deleted.status(), deleted.data()), (204, json!(null)));
        let summary = run::<Tasks>("summary", json!({}), |_| unreachable!());
        assert_eq!((summary.data(), summary.text()), (json!("123"), "123"));
        let text = run::<Tasks>("create_task", json!({"title": "x"}), |_| Reply::text(201, "{}"));
        assert_eq!(
            text.data(),
            json!("{}"),
            "text that looks like JSON is still text"
        );
    }

    #[test]
    #[should_panic(expected = "is not an endpoint tasks's describe() declares")]
    fn an_undeclared_endpoint_is_refused_as_the_gateway_never_calls_it() {
        run::<Tasks>("all_task", json!({}), |_| Reply::status(200));
    }

    #[test]
    #[should_panic(expected = "params must be a JSON object")]
    fn params_that_are_no_object_are_refused() {
        run::<Tasks>("all_tasks", json!([]), |_| Reply::status(200));
    }

    #[test]
    fn every_example_runs() {
        let all = examples::<Tasks>();
        assert_eq!(all.len(), 1, "{all:?}");
        for (endpoint, title, params) in all {
            let run = run::<Tasks>(&endpoint, params, |_| Reply::json(201, json!({})));
            assert_eq!(run.status(), 201, "{title}");
        }
    }

    #[test]
    #[should_panic(expected = "was sent by the fake upstream's closure")]
    fn the_closure_cannot_send_requests_itself() {
        run::<Tasks>("delete_task", json!({}), |_| {
            let _ = http::get("/elsewhere").send();
            Reply::status(204)
        });
    }

    #[test]
    fn repeated_query_parameters_and_a_fragment_are_read_apart() {
        let sent = super::Sent {
            method: "GET".into(),
            url: "/search?tag=a&tag=b%20c#top".into(),
            headers: Vec::new(),
            body: None,
        };
        assert_eq!(sent.query_all("tag"), ["a", "b c"]);
        assert_eq!((sent.path(), sent.query("missing")), ("/search", None));
    }

    #[test]
    fn requests_go_to_the_fake_in_order_and_logs_are_kept() {
        let run = run::<Tasks>("all_tasks", json!({}), |request| {
            match request.query("page").as_deref() {
                Some("1") => {
                    Reply::json(200, json!([{"id": 1}])).header("link", "</tasks?page=2>; rel=\"next\"")
                }
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
        let outside = std::panic::catch_unwind(|| http::get("/tasks").send());
        let message = outside
            .expect_err("no fake is left")
            .downcast::<String>()
            .expect("text");
        assert!(message.contains("outside sluice_sdk::testing::run"), "{message}");
        let run = run::<Tasks>("all_tasks", json!({}), |_| Reply::json(200, json!([])));
        assert_eq!(run.data(), json!([]));
    }
}
