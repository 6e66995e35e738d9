"""The {{id}} connector, in Python: `build.sh` turns this module into a WebAssembly component
with componentize-py. Start by describing the API it talks to (base_url, allowed_hosts, auth),
then replace the example actions with real ones.

The gateway checks each call's params against the action's JSON Schema before `invoke` runs,
and adds the connection's credential to every request sent through `http.send`: this code never
sees it, and must not set `Authorization` itself. `print()` writes a line to the gateway's log,
attributed to the connector and the request's transaction key, as does the traceback of an
uncaught exception. Import every module here, at the top: only what is imported at build time
is in the component.
"""

import json
from urllib.parse import quote, urlencode

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import connector as c
from wit_world.imports import http, types

VERSION = "0.1.0"

ECHO_SCHEMA = {
    "type": "object",
    "required": ["message"],
    "additionalProperties": False,
    "properties": {"message": {"type": "string", "minLength": 1, "description": "What to echo"}},
}

GET_ITEM_SCHEMA = {
    "type": "object",
    "required": ["id"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "fields": {"type": "string", "description": "Comma-separated fields to return"},
    },
}

CREATE_ITEM_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}},
}


def endpoint(name, title, method, path, description, schema, examples):
    return c.Endpoint(
        name=name,
        title=title,
        method=method,
        path=path,
        description=description,
        params_schema=json.dumps(schema),
        examples=[c.Example(title=t, params_json=json.dumps(p)) for t, p in examples],
    )


def send(method, url, query=None, json_body=None):
    """Send one request through the host. `url` is a path, resolved against the connection's
    base URL, or an absolute URL on one of `allowed_hosts`. `query` is a dict of query
    parameters (those that are None are left out); `json_body` is sent as the JSON body."""
    pairs = [(name, value) for name, value in (query or {}).items() if value is not None]
    if pairs:
        url += ("&" if "?" in url else "?") + urlencode(pairs, quote_via=quote)
    headers = [types.Header("accept", "application/json")]
    body = None
    if json_body is not None:
        headers.append(types.Header("content-type", "application/json"))
        body = json.dumps(json_body).encode()
    request = types.Request(method=method, url=url, headers=headers, body=body)
    try:
        response = http.send(request)
    except Err as error:
        # The host's typed http-error (denied, timeout, too-large, ...): hand it back as it is.
        raise Err(c.ConnectorError_Http(error.value))
    content_type = next((h.value for h in response.headers if h.name.lower() == "content-type"), None)
    # The upstream's status and body go back to the caller as they are.
    return c.Output(status=response.status, content_type=content_type, body=bytes(response.body))


class Connector(exports.Connector):
    def describe(self):
        return c.Manifest(
            id="{{id}}",
            name="{{title}}",
            version=VERSION,
            description="Describe what this connector talks to",
            category="developer-tools",
            icon_url=None,
            base_url="https://api.example.com",
            allowed_hosts=["https://api.example.com"],
            auth=c.AuthScheme_Bearer(),
            endpoints=[
                endpoint(
                    "echo", "Echo a message", "GET", "/",
                    "Returns the message without calling the upstream, and logs it.",
                    ECHO_SCHEMA, [("Hello", {"message": "hello"})],
                ),
                endpoint(
                    "get_item", "Get an item", "GET", "/items/{id}",
                    "Fetches one item from the upstream API.",
                    GET_ITEM_SCHEMA, [("Item 42", {"id": "42"})],
                ),
                endpoint(
                    "create_item", "Create an item", "POST", "/items",
                    "Creates an item in the upstream API.",
                    CREATE_ITEM_SCHEMA, [("A widget", {"name": "Widget"})],
                ),
            ],
        )

    def invoke(self, endpoint, params_json):
        try:
            params = json.loads(params_json)
        except ValueError as error:
            raise Err(c.ConnectorError_BadParams(f"params are not JSON: {error}"))
        if not isinstance(params, dict):
            raise Err(c.ConnectorError_BadParams("params must be a JSON object"))

        if endpoint == "echo":
            print(f"{{id}} echoes {json.dumps(params['message'])}")
            body = json.dumps({"message": params["message"]}).encode()
            return c.Output(status=200, content_type="application/json", body=body)
        if endpoint == "get_item":
            # Percent-encode whatever the caller puts in a path segment.
            return send("GET", "/items/" + quote(params["id"], safe=""), query={"fields": params.get("fields")})
        if endpoint == "create_item":
            return send("POST", "/items", json_body={"name": params["name"]})
        raise Err(c.ConnectorError_UnknownEndpoint(endpoint))
