// A fake of the gateway for unit tests: `run()` calls an action of the connector while the
// test's `upstream` function answers every `http.send`, and gives back what came out.
//
// It stands in for the upstream only. What the gateway itself does is not done here: checking
// params against the action's schema, resolving a path against the base URL, the allowed-hosts
// and header rules, injecting the credential, redirects, size and time limits. A request is
// recorded as the connector wrote it (a path stays a path); `sluice dev` runs the connector in
// the real gateway for the rest.

let current = null;

const decoder = new TextDecoder();
const encoder = new TextEncoder();

// A request the connector sent, with readers for tests.
function recorded(request) {
  const body = request.body ? Uint8Array.from(request.body) : null;
  const url = request.url;
  const query = new URLSearchParams(url.includes("?") ? url.slice(url.indexOf("?") + 1).split("#")[0] : "");
  return {
    method: request.method,
    url,
    path: url.split("?")[0],
    query,
    headers: request.headers.map(({ name, value }) => [name, value]),
    body,
    header(name) {
      const found = request.headers.find((h) => h.name.toLowerCase() === name.toLowerCase());
      return found ? found.value : undefined;
    },
    text() {
      return body ? decoder.decode(body) : "";
    },
    json() {
      return JSON.parse(this.text());
    },
  };
}

// What the fake upstream answers: `reply.json(200, {...})`, `reply.text(404, "...")`,
// `reply.status(204)`, or `reply.fail("timeout", "...")` for a send the gateway could not make
// (the tags of the contract's `http-error`: denied, timeout, too-large, invalid, transport,
// other). `headers` is a list of [name, value].
export const reply = {
  json: (status, value, headers = []) => answer(status, [["content-type", "application/json"], ...headers], JSON.stringify(value)),
  text: (status, text, headers = []) => answer(status, [["content-type", "text/plain; charset=utf-8"], ...headers], text),
  status: (status, headers = []) => answer(status, headers, ""),
  fail: (tag, message) => ({ failure: { tag, val: message } }),
};

function answer(status, headers, text) {
  return { response: { status, headers: headers.map(([name, value]) => ({ name, value })), body: encoder.encode(text) } };
}

// The `http` interface, as the gateway provides it.
export const http = {
  send(request) {
    if (!current) throw new Error(`${request.method} ${request.url} was sent outside run(): there is no gateway here to send it`);
    const sent = recorded(request);
    current.sent.push(sent);
    const answered = current.upstream(sent);
    if (answered.failure) {
      // As componentize-qjs raises the contract's error: its value is on `payload`.
      throw Object.assign(new Error(`${answered.failure.tag}: ${answered.failure.val}`), { payload: answered.failure });
    }
    return answered.response;
  },
};

// The `log` interface.
export const log = {
  write(level, message) {
    if (current) current.logs.push([level, message]);
    else process.stderr.write(`[${level}] ${message}\n`);
  },
};

// Run action `endpoint` of `connector` (connector.js's export) with `params` (an object),
// `upstream(sent)` answering each request. Returns `{output, error, sent, logs, status,
// data}`: `output` is what `invoke` returned, `error` what it threw (`{tag, val}` for the
// contract's errors), `data` the caller's `data` as the gateway makes it (JSON for a JSON
// media type, null for an empty body, else text).
export function run(connector, endpoint, params, upstream) {
  const declared = connector.describe().endpoints.map((e) => e.name);
  if (!declared.includes(endpoint)) {
    throw new Error(`\`${endpoint}\` is not an endpoint describe() declares, so the gateway never calls it (declared: ${declared.join(", ")})`);
  }
  if (current) throw new Error("run() called inside another run()");
  current = { upstream, sent: [], logs: [] };
  const outcome = { output: undefined, error: undefined, sent: current.sent, logs: current.logs };
  try {
    outcome.output = connector.invoke(endpoint, JSON.stringify(params));
  } catch (error) {
    outcome.error = error;
  } finally {
    current = null;
  }
  if (outcome.output) {
    const { status, contentType, body } = outcome.output;
    const media = (contentType ?? "").split(";")[0].trim().toLowerCase();
    const text = decoder.decode(Uint8Array.from(body ?? []));
    outcome.status = status;
    outcome.data = text === "" ? null : media === "application/json" || media.endsWith("+json") ? JSON.parse(text) : text;
  }
  return outcome;
}
