// HubSpot CRM connector, written in C and built with clang + wit-bindgen + wasm-tools.
//
// Contacts in HubSpot's CRM v3 API: create, read, search. Authentication is a private-app
// access token injected by the gateway as a bearer token; this code never sees it and must
// never set `Authorization` itself.
//
// Memory: everything returned to the host (manifest, output, error) is malloc'd and freed by
// the generated post-return code; the export's arguments are ours to free; requests passed to
// the `http` import are only borrowed by it, and its response is ours to free.

#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>

#include "connector_world.h"
#include "json.h"

#define VERSION "0.1.0"
#define CONTACTS "/crm/v3/objects/contacts"

typedef connector_world_string_t string_t;
typedef exports_sluice_connector_connector_manifest_t manifest_t;
typedef exports_sluice_connector_connector_endpoint_t endpoint_t;
typedef exports_sluice_connector_connector_output_t output_t;
typedef exports_sluice_connector_connector_connector_error_t error_t;

// ---- describe() ----

typedef struct {
    const char *name, *title, *method, *path, *description, *schema;
    const char *example_title, *example_params;
} endpoint_spec;

static const endpoint_spec ENDPOINTS[] = {
    {
        "create_contact", "Create a contact", "POST", CONTACTS,
        "Creates a contact from its properties (email, firstname, lastname, phone, company, "
        "or any custom property by internal name). HubSpot answers 409 when the email exists.",
        "{\"type\":\"object\",\"required\":[\"properties\"],\"additionalProperties\":false,\"properties\":{"
        "\"properties\":{\"type\":\"object\",\"minProperties\":1,"
        "\"description\":\"Contact properties by internal name\","
        "\"additionalProperties\":{\"type\":[\"string\",\"number\",\"boolean\",\"null\"]},"
        "\"properties\":{"
        "\"email\":{\"type\":\"string\",\"description\":\"Email address; must be unique among contacts\"},"
        "\"firstname\":{\"type\":\"string\",\"description\":\"First name\"},"
        "\"lastname\":{\"type\":\"string\",\"description\":\"Last name\"},"
        "\"phone\":{\"type\":\"string\",\"description\":\"Phone number\"},"
        "\"company\":{\"type\":\"string\",\"description\":\"Company name, as text\"}}},"
        "\"associations\":{\"type\":\"array\",\"items\":{\"type\":\"object\"},"
        "\"description\":\"Records to associate, in HubSpot's v3 shape\"}}}",
        "A new lead",
        "{\"properties\":{\"email\":\"jenny@example.com\",\"firstname\":\"Jenny\",\"lastname\":\"Rosen\"}}",
    },
    {
        "get_contact", "Get a contact", "GET", CONTACTS "/{contact_id}",
        "Reads one contact by ID, or by another unique property such as email with `id_property`.",
        "{\"type\":\"object\",\"required\":[\"contact_id\"],\"additionalProperties\":false,\"properties\":{"
        "\"contact_id\":{\"type\":\"string\",\"minLength\":1,\"not\":{\"enum\":[\".\",\"..\"]},"
        "\"description\":\"The contact's ID, or the value of `id_property`\"},"
        "\"id_property\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_]+$\","
        "\"description\":\"Look the contact up by this unique property, e.g. email\"},"
        "\"properties\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_]+$\"},"
        "\"description\":\"Internal names of the properties to return; defaults to a standard set\"},"
        "\"archived\":{\"type\":\"boolean\",\"default\":false,"
        "\"description\":\"Read an archived (deleted) contact instead; defaults to false\"}}}",
        "By email, with names",
        "{\"contact_id\":\"jenny@example.com\",\"id_property\":\"email\",\"properties\":[\"firstname\",\"lastname\"]}",
    },
    {
        "search_contacts", "Search contacts", "POST", CONTACTS "/search",
        "Searches contacts by free text and/or filter groups (OR of ANDed filters), with sorting "
        "and paging (`after` from the previous page's paging.next.after).",
        "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
        "\"query\":{\"type\":\"string\",\"description\":\"Free text over default searchable properties\"},"
        "\"filter_groups\":{\"type\":\"array\",\"maxItems\":5,"
        "\"description\":\"Up to 5 filter groups; a contact matches when it matches any group\","
        "\"items\":{\"type\":\"object\",\"required\":[\"filters\"],\"properties\":{"
        "\"filters\":{\"type\":\"array\",\"maxItems\":6,"
        "\"description\":\"Up to 6 filters, all of which a contact must match\","
        "\"items\":{\"type\":\"object\",\"required\":[\"propertyName\",\"operator\"],\"properties\":{"
        "\"propertyName\":{\"type\":\"string\","
        "\"description\":\"Internal name of the property to filter on, e.g. email\"},"
        "\"operator\":{\"type\":\"string\",\"enum\":[\"EQ\",\"NEQ\","
        "\"LT\",\"LTE\",\"GT\",\"GTE\",\"BETWEEN\",\"IN\",\"NOT_IN\",\"HAS_PROPERTY\",\"NOT_HAS_PROPERTY\","
        "\"CONTAINS_TOKEN\",\"NOT_CONTAINS_TOKEN\"],"
        "\"description\":\"How the property is compared with value, highValue or values\"},"
        "\"value\":{\"description\":\"Value to compare with; CONTAINS_TOKEN takes * wildcards\"},"
        "\"highValue\":{\"description\":\"Upper bound for BETWEEN, with value the lower bound\"},"
        "\"values\":{\"type\":\"array\",\"description\":\"The values for IN and NOT_IN\"}}}}}}},"
        "\"sorts\":{\"type\":\"array\",\"description\":\"Sort order of the results, by property\","
        "\"items\":{\"type\":\"object\",\"required\":[\"propertyName\"],\"properties\":{"
        "\"propertyName\":{\"type\":\"string\","
        "\"description\":\"Internal name of the property to sort by, e.g. createdate\"},"
        "\"direction\":{\"enum\":[\"ASCENDING\",\"DESCENDING\"],\"description\":\"Sort direction\"}}}},"
        "\"properties\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},"
        "\"description\":\"Internal names of the properties to return; defaults to a standard set\"},"
        "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":200,\"default\":10,"
        "\"description\":\"Contacts per page, 1 to 200; defaults to 10\"},"
        "\"after\":{\"type\":\"string\","
        "\"description\":\"Paging cursor: paging.next.after of the previous page\"}}}",
        "Contacts at example.com, newest first",
        "{\"filter_groups\":[{\"filters\":[{\"propertyName\":\"email\",\"operator\":\"CONTAINS_TOKEN\","
        "\"value\":\"*@example.com\"}]}],\"sorts\":[{\"propertyName\":\"createdate\",\"direction\":\"DESCENDING\"}],"
        "\"properties\":[\"email\",\"firstname\"],\"limit\":20}",
    },
};

#define ENDPOINT_COUNT (sizeof ENDPOINTS / sizeof ENDPOINTS[0])

static void dup(string_t *out, const char *text) { connector_world_string_dup(out, text); }

// A malloc'd NUL-terminated copy of `len` bytes (the WIT strings we receive are not terminated).
static char *copy_bytes(const uint8_t *bytes, size_t len) {
    char *copy = malloc(len + 1);
    if (!copy) abort();
    memcpy(copy, bytes, len);
    copy[len] = 0;
    return copy;
}

static bool equals_ignoring_case(const string_t *text, const char *expected) {
    size_t len = strlen(expected);
    if (text->len != len) return false;
    for (size_t i = 0; i < len; i++)
        if (tolower(text->ptr[i]) != expected[i]) return false;
    return true;
}

void exports_sluice_connector_connector_describe(manifest_t *ret) {
    memset(ret, 0, sizeof *ret);
    dup(&ret->id, "hubspot");
    dup(&ret->name, "HubSpot");
    dup(&ret->version, VERSION);
    dup(&ret->description, "HubSpot CRM v3: create, read and search contacts");
    dup(&ret->category, "crm");
    ret->icon_url.is_some = true;
    dup(&ret->icon_url.val, "https://www.hubspot.com/favicon.ico");
    dup(&ret->base_url, "https://api.hubapi.com");
    ret->allowed_hosts.len = 1;
    ret->allowed_hosts.ptr = calloc(1, sizeof(string_t));
    if (!ret->allowed_hosts.ptr) abort();
    dup(&ret->allowed_hosts.ptr[0], "https://api.hubapi.com");
    ret->auth.tag = EXPORTS_SLUICE_CONNECTOR_CONNECTOR_AUTH_SCHEME_BEARER;

    ret->endpoints.len = ENDPOINT_COUNT;
    ret->endpoints.ptr = calloc(ENDPOINT_COUNT, sizeof(endpoint_t));
    if (!ret->endpoints.ptr) abort();
    for (size_t i = 0; i < ENDPOINT_COUNT; i++) {
        const endpoint_spec *spec = &ENDPOINTS[i];
        endpoint_t *e = &ret->endpoints.ptr[i];
        dup(&e->name, spec->name);
        dup(&e->title, spec->title);
        dup(&e->method, spec->method);
        dup(&e->path, spec->path);
        dup(&e->description, spec->description);
        dup(&e->params_schema, spec->schema);
        e->examples.len = 1;
        e->examples.ptr = calloc(1, sizeof *e->examples.ptr);
        if (!e->examples.ptr) abort();
        dup(&e->examples.ptr[0].title, spec->example_title);
        dup(&e->examples.ptr[0].params_json, spec->example_params);
    }
}

// ---- invoke() ----

static bool fail(error_t *err, uint8_t tag, const char *message) {
    err->tag = tag;
    // Every string-carrying case shares the same storage in the union.
    dup(&err->val.bad_params, message);
    return false;
}

static bool bad_params(error_t *err, const char *message) {
    return fail(err, EXPORTS_SLUICE_CONNECTOR_CONNECTOR_CONNECTOR_ERROR_BAD_PARAMS, message);
}

// Send one request through the host and turn the answer into the action's output.
static bool send(const char *method, buffer *url, buffer *json_body, output_t *ret, error_t *err) {
    sluice_connector_types_header_t headers[2];
    size_t header_count = 0;
    connector_world_string_set(&headers[header_count].name, "accept");
    connector_world_string_set(&headers[header_count++].value, "application/json");
    sluice_connector_http_request_t request;
    memset(&request, 0, sizeof request);
    if (json_body) {
        connector_world_string_set(&headers[header_count].name, "content-type");
        connector_world_string_set(&headers[header_count++].value, "application/json");
        request.body.is_some = true;
        request.body.val.ptr = (uint8_t *)json_body->data;
        request.body.val.len = json_body->len;
    }
    buf_append(url, "", 1);  // NUL-terminate for string_set
    connector_world_string_set(&request.method, method);
    connector_world_string_set(&request.url, url->data);
    request.headers.ptr = headers;
    request.headers.len = header_count;

    sluice_connector_http_response_t response;
    sluice_connector_http_http_error_t http_error;
    if (!sluice_connector_http_send(&request, &response, &http_error)) {
        err->tag = EXPORTS_SLUICE_CONNECTOR_CONNECTOR_CONNECTOR_ERROR_HTTP;
        err->val.http = http_error;  // ownership moves to the host's post-return free
        return false;
    }
    memset(ret, 0, sizeof *ret);
    ret->status = response.status;
    for (size_t i = 0; i < response.headers.len; i++) {
        if (equals_ignoring_case(&response.headers.ptr[i].name, "content-type")) {
            string_t *value = &response.headers.ptr[i].value;
            ret->content_type.is_some = true;
            ret->content_type.val.ptr = (uint8_t *)copy_bytes(value->ptr, value->len);
            ret->content_type.val.len = value->len;
            break;
        }
    }
    // The body moves into the output as it is; free the rest of the response.
    ret->body.ptr = response.body.ptr;
    ret->body.len = response.body.len;
    response.body.ptr = NULL;
    response.body.len = 0;
    sluice_connector_types_response_free(&response);
    return true;
}

// Appends `,"name":<raw value of params[key]>` when params has `key`.
static void copy_member(buffer *body, json_slice params, const char *key, const char *name, bool *first) {
    json_slice value;
    if (!json_get(params, key, &value)) return;
    buf_puts(body, *first ? "{" : ",");
    *first = false;
    buf_json_string(body, name);
    buf_puts(body, ":");
    buf_slice(body, value);
}

static bool create_contact(json_slice params, output_t *ret, error_t *err) {
    json_slice properties;
    if (!json_get(params, "properties", &properties) || json_kind(properties) != 'o')
        return bad_params(err, "`properties` must be an object");
    buffer body = {0};
    bool first = true;
    copy_member(&body, params, "properties", "properties", &first);
    copy_member(&body, params, "associations", "associations", &first);
    buf_puts(&body, "}");
    buffer url = {0};
    buf_puts(&url, CONTACTS);
    bool ok = send("POST", &url, &body, ret, err);
    free(url.data);
    free(body.data);
    return ok;
}

typedef struct {
    buffer *url;
    bool first;
    bool valid;
} property_list;

static void add_property(json_slice item, void *user) {
    property_list *list = user;
    char *name = json_string(item);
    if (!name) {
        list->valid = false;
        return;
    }
    buf_puts(list->url, list->first ? "" : ",");
    list->first = false;
    buf_percent(list->url, name);
    free(name);
}

static bool get_contact(json_slice params, output_t *ret, error_t *err) {
    json_slice value;
    char *id = json_get(params, "contact_id", &value) ? json_string(value) : NULL;
    if (!id || !*id) {
        free(id);
        return bad_params(err, "`contact_id` must be a non-empty string without NUL characters");
    }
    // `.` and `..` would be resolved away by URL normalisation and reach another path.
    if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0) {
        free(id);
        return bad_params(err, "`contact_id` cannot be `.` or `..`");
    }
    buffer url = {0};
    buf_puts(&url, CONTACTS "/");
    buf_percent(&url, id);
    free(id);
    char separator = '?';
    if (json_get(params, "properties", &value)) {
        buf_append(&url, &separator, 1);
        separator = '&';
        buf_puts(&url, "properties=");
        property_list list = {&url, true, true};
        if (!json_each(value, add_property, &list) || !list.valid) {
            free(url.data);
            return bad_params(err, "`properties` must be an array of strings");
        }
    }
    if (json_get(params, "id_property", &value)) {
        char *property = json_string(value);
        if (!property) {
            free(url.data);
            return bad_params(err, "`id_property` must be a string without NUL characters");
        }
        buf_append(&url, &separator, 1);
        separator = '&';
        buf_puts(&url, "idProperty=");
        buf_percent(&url, property);
        free(property);
    }
    if (json_get(params, "archived", &value) && json_kind(value) == 'b') {
        buf_append(&url, &separator, 1);
        buf_puts(&url, value.ptr[0] == 't' ? "archived=true" : "archived=false");
    }
    bool ok = send("GET", &url, NULL, ret, err);
    free(url.data);
    return ok;
}

static bool search_contacts(json_slice params, output_t *ret, error_t *err) {
    // HubSpot's search body uses camelCase; the params use the connector's snake_case.
    static const char *const FIELDS[][2] = {
        {"query", "query"},   {"filter_groups", "filterGroups"}, {"sorts", "sorts"},
        {"properties", "properties"}, {"limit", "limit"},        {"after", "after"},
    };
    buffer body = {0};
    bool first = true;
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
        copy_member(&body, params, FIELDS[i][0], FIELDS[i][1], &first);
    buf_puts(&body, first ? "{}" : "}");
    buffer url = {0};
    buf_puts(&url, CONTACTS "/search");
    bool ok = send("POST", &url, &body, ret, err);
    free(url.data);
    free(body.data);
    return ok;
}

bool exports_sluice_connector_connector_invoke(string_t *endpoint, string_t *params_json, output_t *ret,
                                               error_t *err) {
    json_slice params = {(const char *)params_json->ptr, params_json->len};
    bool ok;
    if (!json_valid(params.ptr, params.len) || json_kind(params) != 'o') {
        ok = bad_params(err, "params must be a JSON object");
    } else {
#define IS(name) (endpoint->len == strlen(name) && memcmp(endpoint->ptr, name, endpoint->len) == 0)
        if (IS("create_contact")) {
            ok = create_contact(params, ret, err);
        } else if (IS("get_contact")) {
            ok = get_contact(params, ret, err);
        } else if (IS("search_contacts")) {
            ok = search_contacts(params, ret, err);
        } else {
            char *name = copy_bytes(endpoint->ptr, endpoint->len);
            ok = fail(err, EXPORTS_SLUICE_CONNECTOR_CONNECTOR_CONNECTOR_ERROR_UNKNOWN_ENDPOINT, name);
            free(name);
        }
#undef IS
    }
    connector_world_string_free(endpoint);
    connector_world_string_free(params_json);
    return ok;
}
