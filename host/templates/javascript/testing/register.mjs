// `node --import ./testing/register.mjs --test` (the `test` script in package.json): makes
// connector.js's imports of the gateway's interfaces load the fake in host.mjs, so that its
// actions run under `node --test` with no gateway and no WebAssembly.
import { register } from "node:module";

register("./hooks.mjs", import.meta.url);
