#!/usr/bin/env bash
# Build the Slack connector (Python) into <out-dir>/slack.wasm with componentize-py, pinned in
# requirements.txt and installed into a virtualenv under target/lang-tools/python.
CONNECTOR=slack
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib/toolchain.sh
. "${SLUICE_PLUGINS_LIB:-$HERE/../lib}/toolchain.sh"
OUT="$(out_dir "$@")"

python_tools "$HERE"

# Build from a copy: componentize-py writes __pycache__ next to the sources it imports, and a
# write under plugins/ would make cargo rerun the test fixtures' build script every time.
WORK="$TOOLS_DIR/python-build/$CONNECTOR.$$"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"
cp -R "$HERE/." "$WORK/"
rm -rf "$WORK/__pycache__"

TMP="$OUT/.$CONNECTOR.wasm.partial"
# No --stub-wasi: it would turn every WASI import into a trap, so `print()` and the traceback
# of an uncaught exception would crash the call instead of reaching the gateway's log. The
# WASI imports left (stdio, clocks, random, and CPython's socket module) are on the allow-list
# in tests/e2e/wasi_imports.rs, and the gateway grants nothing through them: no files,
# environment or network.
"$VENV/bin/componentize-py" -d "$WIT_DIR" -w connector-world \
    componentize -p "$WORK" app -o "$TMP"
publish "$TMP" "$OUT/$CONNECTOR.wasm"
