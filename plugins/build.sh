#!/usr/bin/env bash
# Build every connector in every language into target/wasm32-wasip2/guest/, the directory the
# README's run command serves:
#   - Rust crates with `cargo plugins` (the alias in .cargo/config.toml);
#   - every other directory with a build.sh (Python, JavaScript, C) with that script.
# A connector whose toolchain is missing is skipped with a loud message; with CI set, a skip
# is an error. A failed build is always an error.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/wasm32-wasip2/guest

# The file stem of the component a crate builds: its `[lib] name`, else its package name with
# `-` as `_` (as cargo names it). `sluice new acme-crm` writes a crate whose library is
# `acme_crm`, in directory `acme-crm`.
library_name() {
    awk '
        /^[[:space:]]*\[/ { section = $0; gsub(/[[:space:]]/, "", section) }
        /^[[:space:]]*name[[:space:]]*=/ {
            value = $0
            sub(/^[^=]*=[[:space:]]*"/, "", value)
            sub(/".*/, "", value)
            if (section == "[lib]") lib = value
            if (section == "[package]") package = value
        }
        END {
            if (lib == "") { lib = package; gsub(/-/, "_", lib) }
            print lib
        }' "$1"
}

cargo plugins
# `cargo plugins` writes to Cargo's target directory. Where that is elsewhere (CARGO_TARGET_DIR
# or `build.target-dir` set), bring the Rust components here too: one directory holds them all.
cargo_target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
mkdir -p "$OUT"
if [ -n "$cargo_target" ] && [ "$(realpath "$cargo_target/wasm32-wasip2/guest")" != "$(realpath "$OUT")" ]; then
    for manifest in plugins/*/Cargo.toml; do
        cp "$cargo_target/wasm32-wasip2/guest/$(library_name "$manifest").wasm" "$OUT/"
    done
fi

skipped=()
failed=()
for script in plugins/*/build.sh; do
    name="$(basename "$(dirname "$script")")"
    status=0
    bash "$script" "$OUT" || status=$?
    case "$status" in
        0) ;;
        3) skipped+=("$name") ;;
        *) failed+=("$name") ;;
    esac
done

if [ "${#skipped[@]}" -gt 0 ]; then
    echo "SKIPPED connectors (toolchain missing, see above): ${skipped[*]}" >&2
fi
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED to build: ${failed[*]}" >&2
    exit 1
fi
if [ "${#skipped[@]}" -gt 0 ] && [ -n "${CI:-}" ] && [ "${CI}" != false ]; then
    echo "CI must build every connector" >&2
    exit 1
fi
echo "connectors in $OUT:" $(cd "$OUT" && ls -- *.wasm) >&2
