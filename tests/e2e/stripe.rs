//! The Stripe connector, written in JavaScript (componentize-qjs, QuickJS), through the real
//! gateway against a fake Stripe API on loopback that insists on form-encoded bodies.

use crate::languages::{
    Connected, assert_bad_request, component, examples_are_listed, refused_egress_is_egress_denied,
};
use serde_json::{Map, Value, json};
use sluice_fixtures::{Recorded, Reply, guests};

/// The secret key in the test connection (Stripe takes it as a bearer token).
const SECRET_KEY: &str = "sk_test_STRIPEe2eSECRETkey0123456789";

const FORM: &str = "application/x-www-form-urlencoded";

fn pairs(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text).into_owned().collect()
}

fn form(request: &Recorded) -> Vec<(String, String)> {
    pairs(&request.body)
}

fn query(request: &Recorded) -> Vec<(String, String)> {
    pairs(request.query.as_deref().unwrap_or("").as_bytes())
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Form fields in a stable order: the gateway may hand params over with keys reordered.
fn sorted(mut fields: Vec<(String, String)>) -> Vec<(String, String)> {
    fields.sort();
    fields
}

fn customer(id: &str) -> Value {
    json!({"id": id, "object": "customer", "email": format!("{id}@example.com")})
}

/// The id Stripe gives every request, sent back in `Request-Id`.
const REQUEST_ID: &str = "req_e2eStripeRequest";

fn stripe_error(status: u16, code: &str, message: &str, param: &str) -> Reply {
    let mut reply = Reply::json(
        status,
        json!({"error": {"type": "invalid_request_error", "code": code, "message": message, "param": param}}),
    );
    reply.headers.push(("request-id".into(), REQUEST_ID.into()));
    reply
}

/// Answers like Stripe: list objects with `has_more`, `starting_after` cursors, and
/// `invalid_request_error`s. POST bodies must be form-encoded, as Stripe requires.
fn fake_stripe(request: &Recorded) -> Reply {
    if request.method == "POST" && request.header("content-type") != Some(FORM) {
        return stripe_error(
            400,
            "parameter_unknown",
            "Invalid request: expected a form body",
            "",
        );
    }
    let form = form(request);
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/v1/customers") => {
            let after = query(request).into_iter().find(|(k, _)| k == "starting_after");
            let (data, has_more) = match after.as_ref().map(|(_, v)| v.as_str()) {
                Some("cus_B") => (vec![customer("cus_C")], false),
                _ => (vec![customer("cus_A"), customer("cus_B")], true),
            };
            Reply::json(
                200,
                json!({"object": "list", "url": "/v1/customers", "has_more": has_more, "data": data}),
            )
        }
        ("POST", "/v1/customers") => {
            let metadata: Map<String, Value> = form
                .iter()
                .filter_map(|(k, v)| {
                    let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
                    Some((key.to_owned(), Value::String(v.clone())))
                })
                .collect();
            Reply::json(
                200,
                json!({"id": "cus_NEW", "object": "customer", "email": field("email"),
                       "name": field("name"), "metadata": metadata}),
            )
        }
        ("GET", "/v1/customers/cus_A") => Reply::json(200, customer("cus_A")),
        ("GET", path) if path.starts_with("/v1/customers/") => stripe_error(
            404,
            "resource_missing",
            &format!("No such customer: '{}'", &path["/v1/customers/".len()..]),
            "id",
        ),
        ("POST", "/v1/payment_intents") => match field("currency").as_deref() {
            Some("usd") | Some("eur") => Reply::json(
                200,
                json!({"id": "pi_3MtwBw", "object": "payment_intent", "amount": field("amount").and_then(|a| a.parse::<u64>().ok()),
                       "currency": field("currency"), "status": "requires_payment_method",
                       // The credential echoed back must be scrubbed before the guest sees it.
                       "echo_authorization": request.header("authorization")}),
            ),
            _ => stripe_error(400, "parameter_invalid_currency", "Invalid currency", "currency"),
        },
        _ => stripe_error(404, "resource_missing", "Unrecognized request URL", ""),
    }
}

async fn connected() -> Option<Connected> {
    let component = component("stripe", guests::STRIPE)?;
    Some(Connected::start(component, "stripe", SECRET_KEY, "", fake_stripe).await)
}

fn assert_authorized(request: &Recorded) {
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {SECRET_KEY}").as_str()),
        "the host injects the secret key"
    );
}

/// Every endpoint's happy path, with Stripe's form encoding checked key by key.
#[tokio::test(flavor = "multi_thread")]
async fn stripe_endpoints_send_form_encoded_requests_with_the_injected_key() {
    let Some(setup) = connected().await else { return };
    examples_are_listed(
        &setup,
        "stripe",
        &[
            "list_customers",
            "create_customer",
            "get_customer",
            "create_payment_intent",
        ],
    )
    .await;

    // list_customers: limit and the starting_after cursor go into the query.
    let first = setup
        .execute("stripe", "list_customers", json!({"limit": 2}))
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["data"]["has_more"], true);
    let next = setup
        .execute(
            "stripe",
            "list_customers",
            json!({"limit": 2, "starting_after": "cus_B"}),
        )
        .await;
    assert_eq!(next.body["data"]["data"][0]["id"], "cus_C");
    assert_eq!(next.body["data"]["has_more"], false);
    let requests = setup.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("GET", "/v1/customers")
    );
    assert_eq!(query(&requests[0]), owned(&[("limit", "2")]));
    assert_eq!(
        query(&requests[1]),
        owned(&[("limit", "2"), ("starting_after", "cus_B")])
    );
    assert!(requests[0].body.is_empty(), "a GET has no body");
    requests.iter().for_each(assert_authorized);

    // create_customer: nested objects become `metadata[key]` / `address[line1]` form keys; the
    // idempotency key becomes a header, not a field.
    let created = setup
        .execute(
            "stripe",
            "create_customer",
            json!({"email": "jenny@example.com", "name": "Jenny Rosen & Co", "metadata": {"user_id": "42", "plan": "pro", "odd][key": "v"},
                   "address": {"line1": "1 Main St", "country": "US"}, "idempotency_key": "create-jenny-1"}),
        )
        .await;
    assert_eq!(
        created.body,
        json!({"status": 200, "data": {"id": "cus_NEW", "object": "customer", "email": "jenny@example.com",
               "name": "Jenny Rosen & Co", "metadata": {"user_id": "42", "plan": "pro", "odd][key": "v"}}})
    );
    let sent = setup.requests().pop().expect("a request");
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v1/customers")
    );
    assert_eq!(sent.header("content-type"), Some(FORM));
    assert_eq!(sent.header("idempotency-key"), Some("create-jenny-1"));
    assert_authorized(&sent);
    assert_eq!(
        sorted(form(&sent)),
        sorted(owned(&[
            ("email", "jenny@example.com"),
            ("name", "Jenny Rosen & Co"),
            ("metadata[user_id]", "42"),
            ("metadata[plan]", "pro"),
            ("metadata[odd][key]", "v"),
            ("address[line1]", "1 Main St"),
            ("address[country]", "US"),
        ]))
    );
    let raw = String::from_utf8_lossy(&sent.body);
    assert!(
        raw.contains("metadata[user_id]=42")
            && raw.contains("name=Jenny%20Rosen%20%26%20Co")
            && raw.contains("metadata[odd%5D%5Bkey]=v"),
        "brackets between names stay readable, names and values are percent-encoded: {raw}"
    );

    // get_customer: the ID is a path segment.
    let got = setup
        .execute("stripe", "get_customer", json!({"id": "cus_A"}))
        .await;
    assert_eq!(got.body, json!({"status": 200, "data": customer("cus_A")}));
    assert_eq!(
        setup.requests().pop().expect("a request").path,
        "/v1/customers/cus_A"
    );

    // create_payment_intent: arrays are indexed (`payment_method_types[0]`), booleans are words.
    let intent = setup
        .execute(
            "stripe",
            "create_payment_intent",
            json!({"amount": 2000, "currency": "usd", "customer": "cus_A", "payment_method_types": ["card", "link"],
                   "automatic_payment_methods": {"enabled": false}, "metadata": {"order_id": 6735}}),
        )
        .await;
    assert_eq!(intent.body["status"], 200, "{:?}", intent.body);
    assert_eq!(intent.body["data"]["id"], "pi_3MtwBw");
    assert_eq!(intent.body["data"]["amount"], 2000);
    assert_eq!(intent.body["data"]["echo_authorization"], "Bearer [REDACTED]");
    let sent = setup.requests().pop().expect("a request");
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v1/payment_intents")
    );
    assert_eq!(sent.header("content-type"), Some(FORM));
    assert_eq!(sent.header("idempotency-key"), None);
    assert_eq!(
        sorted(form(&sent)),
        sorted(owned(&[
            ("amount", "2000"),
            ("currency", "usd"),
            ("customer", "cus_A"),
            ("payment_method_types[0]", "card"),
            ("payment_method_types[1]", "link"),
            ("automatic_payment_methods[enabled]", "false"),
            ("metadata[order_id]", "6735"),
        ]))
    );
}

/// Params failing the schema are a 400 with nothing sent; Stripe's error statuses and bodies
/// are passed through as answers.
#[tokio::test(flavor = "multi_thread")]
async fn stripe_bad_params_are_400_and_upstream_errors_pass_through() {
    let Some(setup) = connected().await else { return };

    let not_a_customer_id = setup
        .execute("stripe", "get_customer", json!({"id": "../charges"}))
        .await;
    assert_bad_request(&setup, &not_a_customer_id, 0);
    let no_currency = setup
        .execute("stripe", "create_payment_intent", json!({"amount": 2000}))
        .await;
    assert_bad_request(&setup, &no_currency, 0);
    let zero_amount = setup
        .execute(
            "stripe",
            "create_payment_intent",
            json!({"amount": 0, "currency": "usd"}),
        )
        .await;
    assert_bad_request(&setup, &zero_amount, 0);
    let too_many = setup
        .execute("stripe", "list_customers", json!({"limit": 1000}))
        .await;
    assert_bad_request(&setup, &too_many, 0);
    // The idempotency key becomes a header: a line break in it is the caller's mistake.
    let bad_idempotency_key = setup
        .execute(
            "stripe",
            "create_customer",
            json!({"email": "a@example.com", "idempotency_key": "abc\n"}),
        )
        .await;
    assert_bad_request(&setup, &bad_idempotency_key, 0);

    let missing = setup
        .execute("stripe", "get_customer", json!({"id": "cus_missing"}))
        .await;
    assert_eq!(missing.status, 200);
    assert_eq!(missing.body["status"], 404);
    assert_eq!(missing.body["data"]["error"]["code"], "resource_missing");
    assert_eq!(
        missing.body["data"]["error"]["message"],
        "No such customer: 'cus_missing'"
    );
    // The connector's `console.warn` reaches the gateway's log under the call's transaction.
    let transaction = missing.headers["x-transaction-key"].to_str().expect("key");
    setup
        .gateway
        .output_with_line(&[
            transaction,
            "WARN",
            &format!("Stripe answered 404 to GET /v1/customers/cus_missing (request id {REQUEST_ID})"),
        ])
        .await;

    let bad_currency = setup
        .execute(
            "stripe",
            "create_payment_intent",
            json!({"amount": 100, "currency": "xyz"}),
        )
        .await;
    assert_eq!(bad_currency.body["status"], 400);
    assert_eq!(bad_currency.body["data"]["error"]["param"], "currency");
}

/// The host's `denied` http-error reaches the connector and comes back as `egress_denied`.
#[tokio::test(flavor = "multi_thread")]
async fn stripe_refused_egress_is_egress_denied() {
    let Some(component) = component("stripe", guests::STRIPE) else {
        return;
    };
    refused_egress_is_egress_denied(
        component,
        "stripe",
        SECRET_KEY,
        "get_customer",
        json!({"id": "cus_A"}),
    )
    .await;
}
