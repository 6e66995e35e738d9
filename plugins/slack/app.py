"""Slack Web API connector, written in Python and built with componentize-py.

It posts messages, lists channels (following Slack's cursor pagination when asked to) and reads
users. Authentication is a bearer token (a bot token `xoxb-...`) injected by the gateway; this
code never sees it and must never set `Authorization` itself.

Slack answers almost everything with HTTP 200 and an envelope `{"ok": true|false, ...}`; the
connector hands that envelope to the caller unchanged (the caller reads `data.ok` and
`data.error`), and passes real HTTP errors such as 429 through with their status.
"""

import json
from urllib.parse import urlencode

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import connector as c
from wit_world.imports import http, types

VERSION = "0.1.0"

# The host refuses a 17th upstream request per invocation (its default cap is 16), so a
# paginated listing stops well before that and says where to continue.
MAX_PAGES = 10

POST_MESSAGE_SCHEMA = {
    "type": "object",
    "required": ["channel", "text"],
    "additionalProperties": False,
    "properties": {
        "channel": {"type": "string", "minLength": 1, "description": "Channel ID (C...), DM ID or #name"},
        "text": {"type": "string", "minLength": 1, "maxLength": 40000, "description": "Message text (mrkdwn)"},
        "thread_ts": {"type": "string", "description": "Reply in the thread of this message timestamp"},
        "blocks": {"type": "array", "items": {"type": "object"}, "description": "Block Kit blocks"},
        "unfurl_links": {"type": "boolean",
                         "description": "Unfurl (preview) text-based links in the message"},
        "mrkdwn": {"type": "boolean",
                   "description": "Parse the text as mrkdwn (the default); false sends it as plain text"},
    },
}

LIST_CHANNELS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "types": {
            "type": "string",
            "description": "Comma-separated: public_channel, private_channel, mpim, im",
            "default": "public_channel",
        },
        "exclude_archived": {"type": "boolean", "default": False,
                             "description": "Leave archived channels out; defaults to false"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100,
                  "description": "Channels per page, 1 to 1000; defaults to 100"},
        "cursor": {"type": "string", "description": "Continue from this next_cursor"},
        "all_pages": {"type": "boolean", "default": False,
                      "description": f"Follow next_cursor and merge up to {MAX_PAGES} pages"},
    },
}

GET_USER_SCHEMA = {
    "type": "object",
    "required": ["user"],
    "additionalProperties": False,
    "properties": {
        "user": {"type": "string", "minLength": 1, "description": "User ID, e.g. U0123ABCD"},
        "include_locale": {"type": "boolean", "default": False,
                           "description": "Include the user's locale in the answer; defaults to false"},
    },
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


def bad_params(message):
    return Err(c.ConnectorError_BadParams(message))


def send(method, path, query=None, body=None):
    """Send one request through the host; `body` is sent as JSON."""
    url = path + ("?" + urlencode(query) if query else "")
    headers = [types.Header("accept", "application/json")]
    data = None
    if body is not None:
        headers.append(types.Header("content-type", "application/json; charset=utf-8"))
        data = json.dumps(body).encode()
    try:
        response = http.send(types.Request(method=method, url=url, headers=headers, body=data))
    except Err as error:
        # `http.send` raises the host's typed http-error; hand it on as such.
        raise Err(c.ConnectorError_Http(error.value))
    if response.status == 429:
        # The caller gets the 429 as it is; the operator sees it in the gateway's log.
        retry_after = header(response, "retry-after")
        wait = f"retry after {retry_after} s" if retry_after else "no Retry-After given"
        print(f"Slack rate-limited {path}: {wait}")
    return response


def header(response, name):
    for h in response.headers:
        if h.name.lower() == name:
            return h.value
    return None


def output(response):
    return c.Output(
        status=response.status,
        content_type=header(response, "content-type") or "application/json",
        body=bytes(response.body),
    )


def flag(value):
    """Slack's query parameters spell booleans as true/false."""
    return "true" if value else "false"


def list_channels(p):
    query = {"limit": p.get("limit", 100), "types": p.get("types", "public_channel")}
    if "exclude_archived" in p:
        query["exclude_archived"] = flag(p["exclude_archived"])
    if p.get("cursor"):
        query["cursor"] = p["cursor"]
    if not p.get("all_pages"):
        return output(send("GET", "/conversations.list", query))

    channels = []
    for _ in range(MAX_PAGES):
        response = send("GET", "/conversations.list", query)
        if response.status != 200:
            return output(response)
        try:
            page = json.loads(bytes(response.body))
        except ValueError:
            raise Err(c.ConnectorError_Upstream("conversations.list did not answer JSON"))
        if not page.get("ok"):
            # An error envelope (invalid_cursor, ratelimited, ...) ends the walk as it is.
            return output(response)
        channels.extend(page.get("channels", []))
        next_cursor = (page.get("response_metadata") or {}).get("next_cursor") or ""
        if not next_cursor:
            break
        query["cursor"] = next_cursor
    merged = {"ok": True, "channels": channels, "response_metadata": {"next_cursor": next_cursor}}
    return c.Output(status=200, content_type="application/json", body=json.dumps(merged).encode())


class Connector(exports.Connector):
    def describe(self):
        return c.Manifest(
            id="slack",
            name="Slack",
            version=VERSION,
            description="Slack Web API: post messages, list channels, read users",
            category="communication",
            icon_url="https://a.slack-edge.com/80588/marketing/img/meta/favicon-32.png",
            base_url="https://slack.com/api",
            allowed_hosts=["https://slack.com"],
            auth=c.AuthScheme_Bearer(),
            endpoints=[
                endpoint(
                    "post_message", "Post a message", "POST", "/chat.postMessage",
                    "Sends a message to a channel, DM or thread (chat.postMessage).",
                    POST_MESSAGE_SCHEMA,
                    [("Hello to #general", {"channel": "C0123456789", "text": "Hello from Sluice"}),
                     ("Reply in a thread", {"channel": "C0123456789", "text": "On it", "thread_ts": "1712345678.000100"})],
                ),
                endpoint(
                    "list_channels", "List channels", "GET", "/conversations.list",
                    "Lists conversations (conversations.list). Pass `cursor` for the next page, or "
                    f"`all_pages` to follow next_cursor for up to {MAX_PAGES} pages.",
                    LIST_CHANNELS_SCHEMA,
                    [("First page of public channels", {"limit": 100}),
                     ("Every public and private channel", {"types": "public_channel,private_channel", "all_pages": True})],
                ),
                endpoint(
                    "get_user", "Get a user", "GET", "/users.info",
                    "Returns a user's profile (users.info).",
                    GET_USER_SCHEMA,
                    [("One user", {"user": "U0123ABCD"})],
                ),
            ],
        )

    def invoke(self, endpoint, params_json):
        try:
            p = json.loads(params_json)
        except ValueError as error:
            raise bad_params(f"params are not JSON: {error}")
        if not isinstance(p, dict):
            raise bad_params("params must be a JSON object")

        # The host validated params against the schema already; these checks keep the
        # connector safe when it is run by something that did not.
        if endpoint == "post_message":
            if not isinstance(p.get("channel"), str) or not isinstance(p.get("text"), str):
                raise bad_params("`channel` and `text` are required strings")
            body = {k: p[k] for k in ("channel", "text", "thread_ts", "blocks", "unfurl_links", "mrkdwn") if k in p}
            return output(send("POST", "/chat.postMessage", body=body))
        if endpoint == "list_channels":
            return list_channels(p)
        if endpoint == "get_user":
            if not isinstance(p.get("user"), str):
                raise bad_params("`user` is a required string")
            query = {"user": p["user"]}
            if "include_locale" in p:
                query["include_locale"] = flag(p["include_locale"])
            return output(send("GET", "/users.info", query))
        raise Err(c.ConnectorError_UnknownEndpoint(endpoint))
