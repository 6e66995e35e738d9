#!/usr/bin/env bash
# Build the Stripe connector (JavaScript) into <out-dir>/stripe.wasm with componentize-qjs
# (QuickJS), pinned by package.json + package-lock.json and installed with `npm ci` into
# target/lang-tools/js.
CONNECTOR=stripe
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib/toolchain.sh
. "${SLUICE_PLUGINS_LIB:-$HERE/../lib}/toolchain.sh"
OUT="$(out_dir "$@")"

js_tools "$HERE"

TMP="$OUT/.$CONNECTOR.wasm.partial"
# --sync: the host's wasmtime runs without component-model async.
# --opt-size: the size-optimised QuickJS build, 1.1 MB instead of 1.6 MB.
# No --stub-wasi: it would turn every WASI import into a trap, stderr included, where the
# runtime writes an uncaught exception's message and stack (which the gateway logs under the
# request's transaction key). The WASI imports left are on the allow-list in
# tests/e2e/wasi_imports.rs, and the gateway grants nothing through them.
"$NODE_DIR/node_modules/.bin/componentize-qjs" --wit "$WIT_DIR" --world connector-world \
    --js "$HERE/connector.js" --sync --opt-size -o "$TMP" >&2
publish "$TMP" "$OUT/$CONNECTOR.wasm"
