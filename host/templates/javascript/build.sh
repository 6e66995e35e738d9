#!/usr/bin/env bash
# Build the {{id}} connector (JavaScript) into <out-dir>/{{id}}.wasm with componentize-qjs
# (QuickJS), pinned by package.json + package-lock.json and installed with `npm ci` into the
# shared tools directory. `sluice dev` runs this on every save.
HERE="$(cd "$(dirname "$0")" && pwd)"
# Named after its directory, as `sluice dev` expects: a copy of the directory builds as itself.
CONNECTOR="$(basename "$HERE")"
# The shared helpers (../lib/toolchain.sh) also say where the contract (WIT) and the tools are.
# shellcheck source=../lib/toolchain.sh
. "${SLUICE_PLUGINS_LIB:-$HERE/../lib}/toolchain.sh"
OUT="$(out_dir "$@")"

js_tools "$HERE"

TMP="$OUT/.$CONNECTOR.wasm.partial"
# --sync: the gateway runs components without component-model async.
# No --stub-wasi: it would turn every WASI import into a trap, stderr included, where an
# uncaught exception's message and stack go (the gateway logs them).
"$NODE_DIR/node_modules/.bin/componentize-qjs" --wit "$WIT_DIR" --world connector-world \
    --js "$HERE/connector.js" --sync --opt-size -o "$TMP" >&2
publish "$TMP" "$OUT/$CONNECTOR.wasm"
