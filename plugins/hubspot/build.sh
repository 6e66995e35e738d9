#!/usr/bin/env bash
# Build the HubSpot connector (C) into <out-dir>/hubspot.wasm:
#   1. wit-bindgen generates the C bindings for the contract (at build time, into target/, so
#      they always match wit/ and nothing generated is committed);
#   2. clang compiles a wasm32-wasi (preview 1) reactor module against Debian's wasi-libc;
#   3. wasm-tools turns the core module into a component.
# Tools: apt packages clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32, and
# `cargo install --locked wit-bindgen-cli@0.46.0 wasm-tools@1.239.0` (what .ci/run installs).
# CC, WASI_SYSROOT, WIT_BINDGEN and WASM_TOOLS override where they are found (e.g. wasi-sdk).
CONNECTOR=hubspot
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib/toolchain.sh
. "${SLUICE_PLUGINS_LIB:-$HERE/../lib}/toolchain.sh"
OUT="$(out_dir "$@")"

WIT_BINDGEN_VERSION=0.46.0
WASM_TOOLS_VERSION=1.239.0

CC="${CC_WASM:-$(command -v clang-19 || command -v clang || true)}"
[ -n "$CC" ] || skip "clang is not installed (apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)"
command -v wasm-ld-19 >/dev/null || command -v wasm-ld >/dev/null ||
    skip "the wasm linker is not installed (apt-get install lld-19)"
if [ -n "${WASI_SYSROOT:-}" ]; then
    SYSROOT_FLAGS=(--sysroot "$WASI_SYSROOT")
elif [ -f /usr/lib/wasm32-wasi/libc.a ]; then
    SYSROOT_FLAGS=()  # Debian's clang finds Debian's wasi-libc by itself
else
    skip "no WASI libc (apt-get install wasi-libc, or set WASI_SYSROOT to a wasi-sdk sysroot)"
fi
WIT_BINDGEN="${WIT_BINDGEN:-$(command -v wit-bindgen || true)}"
[ -n "$WIT_BINDGEN" ] || skip "wit-bindgen is not installed (cargo install --locked wit-bindgen-cli --version $WIT_BINDGEN_VERSION)"
WASM_TOOLS="${WASM_TOOLS:-$(command -v wasm-tools || true)}"
[ -n "$WASM_TOOLS" ] || skip "wasm-tools is not installed (cargo install --locked wasm-tools --version $WASM_TOOLS_VERSION)"
for tool in "$WIT_BINDGEN:$WIT_BINDGEN_VERSION" "$WASM_TOOLS:$WASM_TOOLS_VERSION"; do
    if ! "${tool%%:*}" --version | grep -q " ${tool##*:}"; then
        echo "warning: $("${tool%%:*}" --version) is not the pinned ${tool##*:}" >&2
    fi
done

WORK="$TOOLS_DIR/c-build/$CONNECTOR.$$"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"

"$WIT_BINDGEN" c --world connector-world --out-dir "$WORK" "$WIT_DIR" >/dev/null
"$CC" --target=wasm32-wasi -mexec-model=reactor "${SYSROOT_FLAGS[@]}" \
    -O2 -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter \
    -I "$WORK" -o "$WORK/core.wasm" \
    "$HERE"/*.c "$WORK/connector_world.c" "$WORK/connector_world_component_type.o"
# The module imports no WASI at all (malloc grows memory itself; nothing prints), so no
# preview-1 adapter is needed; a connector that uses stdio would add
# `--adapt wasi_snapshot_preview1=<reactor adapter>` here (see docs/connectors/c.md).
TMP="$OUT/.$CONNECTOR.wasm.partial"
"$WASM_TOOLS" component new "$WORK/core.wasm" -o "$TMP"
publish "$TMP" "$OUT/$CONNECTOR.wasm"
