// Unit tests, run with `npm test` (`node --test`): testing/host.mjs answers in place of the
// gateway and the upstream, so no build and no gateway are needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { reply, run } from "./testing/host.mjs";
import { connector } from "./connector.js";

test("get_item asks for the item, with fields as a query parameter", () => {
  const outcome = run(connector, "get_item", { id: "a/42", fields: "name" }, () =>
    reply.json(200, { id: "a/42", name: "Widget" }),
  );
  assert.equal(outcome.sent[0].path, "/items/a%2F42");
  assert.equal(outcome.sent[0].query.get("fields"), "name");
  assert.deepEqual([outcome.status, outcome.data.name], [200, "Widget"]);
});

test("create_item sends its JSON body", () => {
  const outcome = run(connector, "create_item", { name: "Widget" }, (sent) =>
    reply.json(201, { id: "7", ...sent.json() }),
  );
  assert.equal(outcome.sent[0].header("content-type"), "application/json");
  assert.deepEqual([outcome.status, outcome.data], [201, { id: "7", name: "Widget" }]);
});

test("a failed send is the action's http error", () => {
  const outcome = run(connector, "get_item", { id: "42" }, () => reply.fail("timeout", "too slow"));
  assert.deepEqual([outcome.error.tag, outcome.error.val.tag], ["http", "timeout"]);
});
