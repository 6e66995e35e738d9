#!/usr/bin/env bash
# Build the {{id}} connector (Python) into <out-dir>/{{id}}.wasm with componentize-py, pinned in
# requirements.txt and installed into a virtualenv in the shared tools directory. `sluice dev`
# runs this on every save.
HERE="$(cd "$(dirname "$0")" && pwd)"
# Named after its directory, as `sluice dev` expects: a copy of the directory builds as itself.
CONNECTOR="$(basename "$HERE")"
# The shared helpers (../lib/toolchain.sh) also say where the contract (WIT) and the tools are.
# shellcheck source=../lib/toolchain.sh
. "${SLUICE_PLUGINS_LIB:-$HERE/../lib}/toolchain.sh"
OUT="$(out_dir "$@")"

python_tools "$HERE"

# Build from a copy: componentize-py writes __pycache__ next to the sources it imports.
WORK="$TOOLS_DIR/python-build/$CONNECTOR.$$"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"
cp -R "$HERE/." "$WORK/"
rm -rf "$WORK/__pycache__"

TMP="$OUT/.$CONNECTOR.wasm.partial"
# No --stub-wasi: it would turn every WASI import into a trap, so `print()` and the traceback
# of an uncaught exception would crash the call instead of reaching the gateway's log.
"$VENV/bin/componentize-py" -d "$WIT_DIR" -w connector-world \
    componentize -p "$WORK" app -o "$TMP"
publish "$TMP" "$OUT/$CONNECTOR.wasm"
