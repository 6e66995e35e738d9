// The {{id}} connector, in JavaScript: `build.sh` turns this file into a WebAssembly component
// with componentize-qjs (QuickJS). Start by describing the API it talks to (baseUrl,
// allowedHosts, auth), then replace the example actions with real ones.
//
// The gateway checks each call's params against the action's JSON Schema before `invoke` runs,
// and adds the connection's credential to every request sent through `http.send`: this code
// never sees it, and must not set `Authorization` itself. QuickJS has no Web APIs (no fetch,
// no TextEncoder); `http.send` is the only way out.

import http from "sluice:connector/http@0.2.0";
import log from "sluice:connector/log@0.2.0";

// QuickJS has no `console`: this one writes to the gateway's log, attributed to the connector
// and the request's transaction key. (An uncaught exception reaches that log too, with its
// stack.)
function text(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.stack ? `${value}\n${value.stack}` : String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value); // a cyclic object
  }
}
const logAt = (level) => (...values) => log.write(level, values.map(text).join(" "));
globalThis.console = { debug: logAt("debug"), log: logAt("info"), info: logAt("info"), warn: logAt("warn"), error: logAt("error") };

const VERSION = "0.1.0";

// A failed action: `{tag, val}` with the tag a case of the contract's `connector-error`
// ("bad-params", "unknown-endpoint", "http", "upstream", "other").
class ConnectorError {
  constructor(tag, val) {
    this.tag = tag;
    this.val = val;
  }
}

// Send one request through the host. `url` is a path, resolved against the connection's base
// URL, or an absolute URL on one of `allowedHosts`. `query` is an object of query parameters
// (those `undefined` or `null` are left out); `json` is sent as the JSON body.
function send(method, url, { query, json } = {}) {
  const pairs = Object.entries(query ?? {})
    .filter(([, value]) => value !== undefined && value !== null)
    .map(([name, value]) => `${encodeURIComponent(name)}=${encodeURIComponent(String(value))}`);
  if (pairs.length > 0) url += (url.includes("?") ? "&" : "?") + pairs.join("&");
  const headers = [{ name: "accept", value: "application/json" }];
  let body = null;
  if (json !== undefined) {
    headers.push({ name: "content-type", value: "application/json" });
    body = utf8(JSON.stringify(json));
  }
  let response;
  try {
    response = http.send({ method, url, headers, body });
  } catch (error) {
    // The host's refusal carries its typed http-error as `error.payload` (`{tag: "denied",
    // val: "..."}`); anything else is a mistake of this code, thrown on as it is.
    if (error && error.payload !== undefined) throw new ConnectorError("http", error.payload);
    throw error;
  }
  const type = response.headers.find((h) => h.name.toLowerCase() === "content-type");
  // The upstream's status and body go back to the caller as they are.
  return { status: response.status, contentType: type ? type.value : null, body: response.body };
}

// Text as UTF-8 bytes (QuickJS has no TextEncoder).
function utf8(string) {
  const bytes = [];
  for (const char of string) {
    const c = char.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(bytes);
}

const ACTIONS = {
  echo: {
    title: "Echo a message",
    method: "GET",
    path: "/",
    description: "Returns the message without calling the upstream, and logs it.",
    schema: {
      type: "object",
      required: ["message"],
      additionalProperties: false,
      properties: { message: { type: "string", minLength: 1, description: "What to echo" } },
    },
    examples: [["Hello", { message: "hello" }]],
    run(params) {
      console.log(`{{id}} echoes ${JSON.stringify(params.message)}`);
      return { status: 200, contentType: "application/json", body: utf8(JSON.stringify({ message: params.message })) };
    },
  },
  get_item: {
    title: "Get an item",
    method: "GET",
    path: "/items/{id}",
    description: "Fetches one item from the upstream API.",
    schema: {
      type: "object",
      required: ["id"],
      additionalProperties: false,
      properties: {
        id: { type: "string", minLength: 1 },
        fields: { type: "string", description: "Comma-separated fields to return" },
      },
    },
    examples: [["Item 42", { id: "42" }]],
    run(params) {
      // Percent-encode whatever the caller puts in a path segment.
      return send("GET", `/items/${encodeURIComponent(params.id)}`, { query: { fields: params.fields } });
    },
  },
  create_item: {
    title: "Create an item",
    method: "POST",
    path: "/items",
    description: "Creates an item in the upstream API.",
    schema: {
      type: "object",
      required: ["name"],
      additionalProperties: false,
      properties: { name: { type: "string", minLength: 1 } },
    },
    examples: [["A widget", { name: "Widget" }]],
    run(params) {
      return send("POST", "/items", { json: { name: params.name } });
    },
  },
};

export const connector = {
  describe() {
    return {
      id: "{{id}}",
      name: "{{title}}",
      version: VERSION,
      description: "Describe what this connector talks to",
      category: "developer-tools",
      iconUrl: null,
      baseUrl: "https://api.example.com",
      allowedHosts: ["https://api.example.com"],
      auth: { tag: "bearer" },
      endpoints: Object.entries(ACTIONS).map(([name, action]) => ({
        name,
        title: action.title,
        method: action.method,
        path: action.path,
        description: action.description,
        paramsSchema: JSON.stringify(action.schema),
        examples: action.examples.map(([title, params]) => ({ title, paramsJson: JSON.stringify(params) })),
      })),
    };
  },

  invoke(endpoint, paramsJson) {
    // An own-property check, so `constructor` or `__proto__` are unknown endpoints too.
    if (!Object.prototype.hasOwnProperty.call(ACTIONS, endpoint)) throw new ConnectorError("unknown-endpoint", endpoint);
    let params;
    try {
      params = JSON.parse(paramsJson);
    } catch (error) {
      throw new ConnectorError("bad-params", `params are not JSON: ${error}`);
    }
    if (params === null || typeof params !== "object" || Array.isArray(params)) {
      throw new ConnectorError("bad-params", "params must be a JSON object");
    }
    return ACTIONS[endpoint].run(params);
  },
};
