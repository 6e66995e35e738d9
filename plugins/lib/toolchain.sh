# Shared by the non-Rust connectors' build.sh scripts (sourced, not run).
#
# The contract of every `plugins/<name>/build.sh <out-dir>`:
#   - writes `<out-dir>/<name>.wasm` atomically (temp file + rename, so a watching gateway
#     never loads half a component);
#   - exits 0 when built, 3 when a toolchain is missing (after saying so loudly on stderr),
#     anything else when the build failed.
# `plugins/build.sh`, `tests/fixtures/build.rs` and `sluice dev` all rely on it.
#
# Environment overrides (for connectors living outside this repository):
#   SLUICE_WIT_DIR    the WIT package to build against (default: wit/since_v0.2.0)
#   SLUICE_TOOLS_DIR  where pinned build tools are installed (default: target/lang-tools)

set -euo pipefail

SKIPPED=3
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WIT_DIR="${SLUICE_WIT_DIR:-$REPO_ROOT/wit/since_v0.2.0}"
TOOLS_DIR="${SLUICE_TOOLS_DIR:-$REPO_ROOT/target/lang-tools}"

# Say loudly that a connector is skipped because a toolchain is missing, and exit with the
# "skipped" code.
skip() {
    {
        echo "################################################################################"
        echo "## SKIPPED connector '$CONNECTOR': $*"
        echo "################################################################################"
    } >&2
    exit "$SKIPPED"
}

# `usage <out-dir-arg>`: check the single argument and create the directory.
out_dir() {
    if [ "$#" -ne 1 ]; then
        echo "usage: $0 <out-dir>   (writes <out-dir>/$CONNECTOR.wasm)" >&2
        exit 2
    fi
    mkdir -p "$1"
    (cd "$1" && pwd)
}

# Run the rest of a tool installation under a lock, so parallel builds (cargo test's
# fixtures, `sluice dev`, `just plugins`) never install into the same directory at once.
with_tools_lock() {
    mkdir -p "$TOOLS_DIR"
    flock "$TOOLS_DIR/.lock" "$@"
}

# Publish `$1` as `$2` by rename (same directory, so the rename is atomic).
publish() {
    mv -f "$1" "$2"
    echo "built $2 ($(wc -c <"$2") bytes)" >&2
}
