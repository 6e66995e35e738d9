// Stripe API connector, written in JavaScript and built with componentize-qjs (QuickJS).
//
// Customers and payment intents. Stripe takes `application/x-www-form-urlencoded` bodies with
// nested keys spelled `metadata[order_id]=42` and `payment_method_types[0]=card`; this file
// encodes them the way Stripe's own libraries do. The secret key is injected by the gateway
// as a bearer token; this code never sees it and must never set `Authorization` itself.
//
// QuickJS has no Web APIs (no TextEncoder, no fetch): the only way out is the host's
// `sluice:connector/http` import, and the few byte conversions needed are below.

import http from "sluice:connector/http@0.2.0";
import log from "sluice:connector/log@0.2.0";

// QuickJS has no `console`: this one writes to the gateway's log, attributed to the connector
// and the request. (An uncaught exception reaches that log too, with its stack.)
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

// ---- JSON Schemas of each endpoint's params (the host validates before calling invoke) ----

const metadata = {
  type: "object",
  description: "Up to 50 string key/value pairs stored on the object",
  maxProperties: 50,
  additionalProperties: { type: ["string", "number", "boolean"] },
};

const address = {
  type: "object",
  description: "The customer's postal address",
  additionalProperties: false,
  properties: {
    line1: { type: "string", description: "Street address, P.O. box or company name" },
    line2: { type: "string", description: "Apartment, suite, unit or building" },
    city: { type: "string", description: "City, district, suburb, town or village" },
    state: { type: "string", description: "State, county, province or region" },
    postal_code: { type: "string", description: "ZIP or postal code" },
    country: { type: "string", description: "Two-letter ISO country code" },
  },
};

const customerId = { type: "string", pattern: "^cus_[A-Za-z0-9]+$", description: "Customer ID, e.g. cus_NffrFeUfNV2Hib" };

// It goes into a header: visible ASCII only, so that a bad key is the caller's 400 rather than
// an upstream request the host refuses to build (a 502).
const idempotencyKey = {
  type: "string",
  minLength: 1,
  maxLength: 255,
  pattern: "^[\\x21-\\x7e]+$",
  description: "Sent as Idempotency-Key so a retried create is not applied twice",
};

const SCHEMAS = {
  list_customers: {
    type: "object",
    additionalProperties: false,
    properties: {
      limit: {
        type: "integer",
        minimum: 1,
        maximum: 100,
        default: 10,
        description: "Customers per page, 1 to 100; defaults to 10",
      },
      starting_after: {
        ...customerId,
        description: "Cursor: the last customer ID of the page you have, to fetch the page after it",
      },
      ending_before: {
        ...customerId,
        description: "Cursor: the first customer ID of the page you have, to fetch the page before it",
      },
      email: { type: "string", description: "Only customers with exactly this email" },
    },
  },
  create_customer: {
    type: "object",
    additionalProperties: false,
    properties: {
      email: { type: "string", description: "The customer's email address" },
      name: { type: "string", description: "The customer's full name or business name" },
      description: { type: "string", description: "Free-text note on the customer, shown in the Dashboard" },
      phone: { type: "string", description: "The customer's phone number" },
      address,
      metadata,
      idempotency_key: idempotencyKey,
    },
  },
  get_customer: {
    type: "object",
    required: ["id"],
    additionalProperties: false,
    properties: { id: customerId },
  },
  create_payment_intent: {
    type: "object",
    required: ["amount", "currency"],
    additionalProperties: false,
    properties: {
      amount: { type: "integer", minimum: 1, description: "In the currency's smallest unit (cents)" },
      currency: { type: "string", pattern: "^[a-z]{3}$", description: "Three-letter ISO code, lower case" },
      customer: { ...customerId, description: "ID of the customer paying, e.g. cus_NffrFeUfNV2Hib" },
      description: { type: "string", description: "Free-text note on the payment, shown in the Dashboard" },
      receipt_email: { type: "string", description: "Email address to send the receipt to once paid" },
      payment_method_types: {
        type: "array",
        items: { type: "string" },
        minItems: 1,
        description: "Payment method types allowed, e.g. card; omit to use automatic_payment_methods",
      },
      automatic_payment_methods: {
        type: "object",
        required: ["enabled"],
        additionalProperties: false,
        description: "Let Stripe offer the payment methods enabled in the Dashboard",
        properties: { enabled: { type: "boolean", description: "true to turn automatic payment methods on" } },
      },
      metadata,
      idempotency_key: idempotencyKey,
    },
  },
};

const ENDPOINTS = [
  {
    name: "list_customers",
    title: "List customers",
    method: "GET",
    path: "/v1/customers",
    description: "Lists customers, newest first. Page with `starting_after` set to the last ID of the previous page while `has_more` is true.",
    examples: [
      ["First ten customers", { limit: 10 }],
      ["The next page", { limit: 10, starting_after: "cus_NffrFeUfNV2Hib" }],
    ],
  },
  {
    name: "create_customer",
    title: "Create a customer",
    method: "POST",
    path: "/v1/customers",
    description: "Creates a customer with contact details, address and metadata.",
    examples: [
      ["A customer with metadata", { email: "jenny@example.com", name: "Jenny Rosen", metadata: { user_id: "42" } }],
    ],
  },
  {
    name: "get_customer",
    title: "Retrieve a customer",
    method: "GET",
    path: "/v1/customers/{id}",
    description: "Retrieves one customer by ID.",
    examples: [["One customer", { id: "cus_NffrFeUfNV2Hib" }]],
  },
  {
    name: "create_payment_intent",
    title: "Create a payment intent",
    method: "POST",
    path: "/v1/payment_intents",
    description: "Creates a PaymentIntent to collect a payment of `amount` in `currency`.",
    examples: [
      ["$20.00 with automatic payment methods", { amount: 2000, currency: "usd", automatic_payment_methods: { enabled: true } }],
      ["Card payment for a customer", { amount: 1500, currency: "eur", customer: "cus_NffrFeUfNV2Hib", payment_method_types: ["card"] }],
    ],
  },
];

// ---- Form encoding, as Stripe expects it ----

// Flatten a value into `[key, string]` pairs, keys already percent-encoded: objects as
// `key[sub]`, arrays as `key[0]`, booleans as `true`/`false`; `null` becomes an empty string,
// which Stripe reads as "unset". Each name is encoded on its own and the brackets between
// them kept readable, as Stripe's libraries do, so a metadata key holding `]` or `[` stays one
// key instead of opening another level.
function flatten(prefix, value, pairs) {
  if (value === null) {
    pairs.push([prefix, ""]);
  } else if (Array.isArray(value)) {
    value.forEach((item, index) => flatten(`${prefix}[${index}]`, item, pairs));
  } else if (typeof value === "object") {
    for (const [key, item] of Object.entries(value)) {
      const name = encodeURIComponent(key);
      flatten(prefix ? `${prefix}[${name}]` : name, item, pairs);
    }
  } else if (value !== undefined) {
    pairs.push([prefix, String(value)]);
  }
  return pairs;
}

function formEncode(object) {
  return flatten("", object, [])
    .map(([key, value]) => `${key}=${encodeURIComponent(value)}`)
    .join("&");
}

// Form and query strings are ASCII after percent-encoding, so each char is one byte.
function asciiBytes(text) {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

// ---- Requests through the host ----

class ConnectorError {
  constructor(tag, val) {
    this.tag = tag;
    this.val = val;
  }
}

function send(method, url, { form, idempotencyKey } = {}) {
  const headers = [{ name: "accept", value: "application/json" }];
  let body = null;
  if (form !== undefined) {
    headers.push({ name: "content-type", value: "application/x-www-form-urlencoded" });
    body = asciiBytes(formEncode(form));
  }
  if (idempotencyKey !== undefined) headers.push({ name: "idempotency-key", value: idempotencyKey });
  let response;
  try {
    response = http.send({ method, url, headers, body });
  } catch (error) {
    // A failed import call throws an Error whose `payload` is the host's typed http-error
    // (`{tag: "denied", val: "..."}`); hand it back to the host as it is. Anything else is a
    // mistake of this code: thrown on, so its own message is what the log shows.
    if (error && error.payload !== undefined) throw new ConnectorError("http", error.payload);
    throw error;
  }
  const header = (name) => response.headers.find((h) => h.name.toLowerCase() === name)?.value ?? null;
  if (response.status >= 400) {
    // The answer goes back to the caller as it is; Stripe support asks for the request id.
    console.warn(`Stripe answered ${response.status} to ${method} ${url.split("?")[0]} (request id ${header("request-id")})`);
  }
  return { status: response.status, contentType: header("content-type"), body: response.body };
}

function query(params, names) {
  const pairs = names.filter((n) => params[n] !== undefined).map((n) => [n, params[n]]);
  return pairs.length ? "?" + formEncode(Object.fromEntries(pairs)) : "";
}

// Everything but the `idempotency_key` param goes into the form body.
function withoutIdempotencyKey(params) {
  const { idempotency_key: _ignored, ...rest } = params;
  return rest;
}

function required(params, name, type) {
  if (typeof params[name] !== type) throw new ConnectorError("bad-params", `\`${name}\` must be a ${type}`);
  return params[name];
}

const HANDLERS = {
  list_customers: (p) => send("GET", "/v1/customers" + query(p, ["limit", "starting_after", "ending_before", "email"])),
  create_customer: (p) =>
    send("POST", "/v1/customers", { form: withoutIdempotencyKey(p), idempotencyKey: p.idempotency_key }),
  get_customer: (p) => send("GET", `/v1/customers/${encodeURIComponent(required(p, "id", "string"))}`),
  create_payment_intent: (p) => {
    required(p, "amount", "number");
    required(p, "currency", "string");
    return send("POST", "/v1/payment_intents", { form: withoutIdempotencyKey(p), idempotencyKey: p.idempotency_key });
  },
};

export const connector = {
  describe() {
    return {
      id: "stripe",
      name: "Stripe",
      version: VERSION,
      description: "Stripe API: customers and payment intents",
      category: "payments",
      iconUrl: "https://stripe.com/favicon.ico",
      baseUrl: "https://api.stripe.com",
      allowedHosts: ["https://api.stripe.com"],
      auth: { tag: "bearer" },
      endpoints: ENDPOINTS.map((e) => ({
        name: e.name,
        title: e.title,
        method: e.method,
        path: e.path,
        description: e.description,
        paramsSchema: JSON.stringify(SCHEMAS[e.name]),
        examples: e.examples.map(([title, params]) => ({ title, paramsJson: JSON.stringify(params) })),
      })),
    };
  },

  invoke(endpoint, paramsJson) {
    // An own-property check, so `constructor` or `__proto__` are unknown endpoints too.
    const handler = Object.prototype.hasOwnProperty.call(HANDLERS, endpoint) ? HANDLERS[endpoint] : undefined;
    if (!handler) throw new ConnectorError("unknown-endpoint", endpoint);
    let params;
    try {
      params = JSON.parse(paramsJson);
    } catch (error) {
      throw new ConnectorError("bad-params", `params are not JSON: ${error}`);
    }
    if (params === null || typeof params !== "object" || Array.isArray(params)) {
      throw new ConnectorError("bad-params", "params must be a JSON object");
    }
    return handler(params);
  },
};
