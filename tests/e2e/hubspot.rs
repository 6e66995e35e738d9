//! The HubSpot connector, written in C (clang, wit-bindgen, wasm-tools), through the real
//! gateway against a fake HubSpot CRM v3 API on loopback.

use crate::languages::{
    Connected, assert_bad_request, component, examples_are_listed, refused_egress_is_egress_denied,
};
use serde_json::{Value, json};
use sluice_fixtures::{Recorded, Reply, guests};

/// The private-app token in the test connection.
const TOKEN: &str = "pat-na1-HUBSPOTe2eTOKEN-0123456789";

const CONTACTS: &str = "/crm/v3/objects/contacts";

fn contact(id: &str, properties: Value) -> Value {
    json!({"id": id, "properties": properties, "createdAt": "2026-01-02T03:04:05.000Z",
           "updatedAt": "2026-01-02T03:04:05.000Z", "archived": false})
}

fn hubspot_error(status: u16, category: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"status": "error", "message": message, "correlationId": "c0ffee00-0000-4000-8000-000000000000", "category": category}),
    )
}

/// Answers like HubSpot's CRM v3 objects API.
fn fake_hubspot(request: &Recorded) -> Reply {
    let path = request.path.as_str();
    match (request.method.as_str(), path) {
        ("POST", CONTACTS) => {
            let body = request.json();
            if body["properties"]["email"] == "taken@example.com" {
                return hubspot_error(409, "CONFLICT", "Contact already exists. Existing ID: 101");
            }
            let mut properties = body["properties"].clone();
            properties["hs_object_id"] = json!("201");
            Reply::json(201, contact("201", properties))
        }
        ("POST", "/crm/v3/objects/contacts/search") => Reply::json(
            200,
            json!({"total": 1, "results": [contact("101", json!({"email": "jenny@example.com"}))],
                   "paging": {"next": {"after": "20"}},
                   // The credential echoed back must be scrubbed before the guest sees it.
                   "echo_authorization": request.header("authorization")}),
        ),
        ("GET", "/crm/v3/objects/contacts/101") | ("GET", "/crm/v3/objects/contacts/jenny%40example.com") => {
            Reply::json(
                200,
                contact("101", json!({"email": "jenny@example.com", "firstname": "Jenny"})),
            )
        }
        _ => hubspot_error(404, "OBJECT_NOT_FOUND", "resource not found"),
    }
}

async fn connected() -> Option<Connected> {
    let component = component("hubspot", guests::HUBSPOT)?;
    Some(Connected::start(component, "hubspot", TOKEN, "", fake_hubspot).await)
}

fn assert_authorized(request: &Recorded) {
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str()),
        "the host injects the token"
    );
}

/// Every endpoint's happy path: the C connector builds HubSpot's JSON bodies and query
/// strings, and the host injects the token.
#[tokio::test(flavor = "multi_thread")]
async fn hubspot_endpoints_reach_the_fake_crm_with_the_injected_token() {
    let Some(setup) = connected().await else { return };
    examples_are_listed(
        &setup,
        "hubspot",
        &["create_contact", "get_contact", "search_contacts"],
    )
    .await;

    // create_contact: `{"properties": ...}` (and associations) as HubSpot's JSON body.
    let properties =
        json!({"email": "jenny@example.com", "firstname": "Jenny \"J\" Rösen", "lastname": "Rosen"});
    let created = setup
        .execute("hubspot", "create_contact", json!({"properties": properties}))
        .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    assert_eq!(created.body["status"], 201);
    assert_eq!(created.body["data"]["id"], "201");
    assert_eq!(
        created.body["data"]["properties"]["firstname"],
        "Jenny \"J\" Rösen"
    );
    let sent = setup.only_request();
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", CONTACTS));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_authorized(&sent);
    assert_eq!(sent.json(), json!({"properties": properties}));

    // get_contact by ID, with the properties to return as one comma-separated parameter.
    let by_id = setup
        .execute(
            "hubspot",
            "get_contact",
            json!({"contact_id": "101", "properties": ["email", "firstname"], "archived": false}),
        )
        .await;
    assert_eq!(by_id.body["status"], 200, "{:?}", by_id.body);
    assert_eq!(by_id.body["data"]["properties"]["firstname"], "Jenny");
    let sent = setup.requests().pop().expect("a request");
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("GET", "/crm/v3/objects/contacts/101")
    );
    assert_eq!(
        sent.query.as_deref(),
        Some("properties=email,firstname&archived=false")
    );
    assert!(sent.body.is_empty());
    assert_authorized(&sent);

    // get_contact by email: the ID is percent-encoded as one path segment.
    let by_email = setup
        .execute(
            "hubspot",
            "get_contact",
            json!({"contact_id": "jenny@example.com", "id_property": "email"}),
        )
        .await;
    assert_eq!(by_email.body["data"]["id"], "101", "{:?}", by_email.body);
    let sent = setup.requests().pop().expect("a request");
    assert_eq!(sent.path, "/crm/v3/objects/contacts/jenny%40example.com");
    assert_eq!(sent.query.as_deref(), Some("idProperty=email"));

    // search_contacts: snake_case params become HubSpot's camelCase body, values as given.
    let filter_groups = json!([{"filters": [{"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*@example.com"}]}]);
    let found = setup
        .execute(
            "hubspot",
            "search_contacts",
            json!({"query": "jenny", "filter_groups": filter_groups, "properties": ["email"], "limit": 20, "after": "0"}),
        )
        .await;
    assert_eq!(found.body["status"], 200, "{:?}", found.body);
    assert_eq!(found.body["data"]["total"], 1);
    assert_eq!(found.body["data"]["paging"]["next"]["after"], "20");
    assert_eq!(found.body["data"]["echo_authorization"], "Bearer [REDACTED]");
    let sent = setup.requests().pop().expect("a request");
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/crm/v3/objects/contacts/search")
    );
    assert_eq!(
        sent.json(),
        json!({"query": "jenny", "filterGroups": filter_groups, "properties": ["email"], "limit": 20, "after": "0"})
    );
}

/// Params failing the schema are a 400 with nothing sent; HubSpot's 409 and 404 come back as
/// answers with their status and error body.
#[tokio::test(flavor = "multi_thread")]
async fn hubspot_bad_params_are_400_and_upstream_errors_pass_through() {
    let Some(setup) = connected().await else { return };

    let no_properties = setup.execute("hubspot", "create_contact", json!({})).await;
    assert_bad_request(&setup, &no_properties, 0);
    let dot_dot = setup
        .execute("hubspot", "get_contact", json!({"contact_id": ".."}))
        .await;
    assert_bad_request(&setup, &dot_dot, 0);
    // A NUL would end the C string early and name another contact (`123`).
    let nul = setup
        .execute("hubspot", "get_contact", json!({"contact_id": "123\u{0}456"}))
        .await;
    assert_bad_request(&setup, &nul, 0);
    let too_many = setup
        .execute("hubspot", "search_contacts", json!({"limit": 500}))
        .await;
    assert_bad_request(&setup, &too_many, 0);
    let bad_operator = setup
        .execute(
            "hubspot",
            "search_contacts",
            json!({"filter_groups": [{"filters": [{"propertyName": "email", "operator": "LIKE"}]}]}),
        )
        .await;
    assert_bad_request(&setup, &bad_operator, 0);

    let conflict = setup
        .execute(
            "hubspot",
            "create_contact",
            json!({"properties": {"email": "taken@example.com"}}),
        )
        .await;
    assert_eq!(conflict.status, 200);
    assert_eq!(conflict.body["status"], 409);
    assert_eq!(conflict.body["data"]["category"], "CONFLICT");

    // A path-breaking ID stays inside its segment and simply is not found.
    let missing = setup
        .execute("hubspot", "get_contact", json!({"contact_id": "a/owners/1 ü"}))
        .await;
    assert_eq!(missing.body["status"], 404, "{:?}", missing.body);
    assert_eq!(missing.body["data"]["category"], "OBJECT_NOT_FOUND");
    let sent = setup.requests().pop().expect("a request");
    assert_eq!(sent.path, "/crm/v3/objects/contacts/a%2Fowners%2F1%20%C3%BC");
    // One that starts with `../` is not sent at all, encoded or not: an upstream server that
    // decodes `%2F` before resolving dots would read it as a step up.
    let sent_before = setup.requests().len();
    let climbing = setup
        .execute("hubspot", "get_contact", json!({"contact_id": "../owners/1"}))
        .await;
    assert_eq!(
        (climbing.status, climbing.code()),
        (403, "egress_denied"),
        "{:?}",
        climbing.body
    );
    assert_eq!(setup.requests().len(), sent_before, "nothing more was sent");
}

/// The host's `denied` http-error reaches the connector and comes back as `egress_denied`.
#[tokio::test(flavor = "multi_thread")]
async fn hubspot_refused_egress_is_egress_denied() {
    let Some(component) = component("hubspot", guests::HUBSPOT) else {
        return;
    };
    refused_egress_is_egress_denied(
        component,
        "hubspot",
        TOKEN,
        "get_contact",
        json!({"contact_id": "101"}),
    )
    .await;
}
