#!/usr/bin/env bash
# Build the Stripe connector (JavaScript) into <out-dir>/stripe.wasm with componentize-qjs
# (QuickJS), pinned by package.json + package-lock.json and installed with `npm ci` into
# target/lang-tools/js.
CONNECTOR=stripe
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib/toolchain.sh
. "${SLUICE_PLUGINS_LIB:-$HERE/../lib}/toolchain.sh"
OUT="$(out_dir "$@")"

command -v node >/dev/null && command -v npm >/dev/null || skip "node and npm are not installed (needs Node.js >= 18)"
NODE_DIR="$TOOLS_DIR/js"

install_tools() {
    # `npm ci` installs exactly what package-lock.json pins; rerun only when it changed.
    if ! cmp -s "$HERE/package-lock.json" "$NODE_DIR/.installed-package-lock.json"; then
        mkdir -p "$NODE_DIR" &&
            cp "$HERE/package.json" "$HERE/package-lock.json" "$NODE_DIR/" &&
            (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) &&
            cp "$HERE/package-lock.json" "$NODE_DIR/.installed-package-lock.json"
    fi
}
export -f install_tools
export HERE NODE_DIR
with_tools_lock bash -c install_tools || skip "could not install componentize-qjs into $NODE_DIR (npm ci failed)"

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
