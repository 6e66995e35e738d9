# Shared by the non-Rust connectors' build.sh scripts (sourced, not run).
#
# The contract of every `plugins/<name>/build.sh <out-dir>`:
#   - writes `<out-dir>/<name>.wasm` atomically (temp file + rename, so a watching gateway
#     never loads half a component);
#   - exits 0 when built, 3 when a toolchain is missing (after saying so loudly on stderr),
#     anything else when the build failed.
# `plugins/build.sh`, `tests/fixtures/build.rs` and `sluice dev` all rely on it.
#
# Where it finds the contract and the tools: in this repository, `wit/since_v0.2.0` and
# `target/lang-tools`. `sluice new --lang javascript|python` outside the repository writes a
# copy of this file into `<sources>/lib/` with the contract the `sluice` binary was built with
# beside it (`lib/wit/`); that copy installs the pinned tools under ~/.cache/sluice/lang-tools,
# shared by every connector of the user and outside the directory `sluice dev` watches.
#
# Environment overrides:
#   SLUICE_WIT_DIR    the WIT package to build against
#   SLUICE_TOOLS_DIR  where pinned build tools are installed

set -euo pipefail

SKIPPED=3
LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -d "$LIB_DIR/wit" ]; then
    WIT_DIR="${SLUICE_WIT_DIR:-$LIB_DIR/wit}"
    TOOLS_DIR="${SLUICE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/lang-tools}"
else
    REPO_ROOT="$(cd "$LIB_DIR/../.." && pwd)"
    WIT_DIR="${SLUICE_WIT_DIR:-$REPO_ROOT/wit/since_v0.2.0}"
    TOOLS_DIR="${SLUICE_TOOLS_DIR:-$REPO_ROOT/target/lang-tools}"
fi

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

# Run a command (or a function of this file) under a lock, so parallel builds (cargo test's
# fixtures, `sluice dev`, `just plugins`) never install into the same directory at once.
# Without flock (macOS) it runs unlocked.
with_tools_lock() {
    mkdir -p "$TOOLS_DIR"
    if ! command -v flock >/dev/null; then
        "$@"
        return
    fi
    (
        flock 9
        "$@"
    ) 9>"$TOOLS_DIR/.lock"
}

# The tools a package-lock.json pins: every package but the root one, whose name, version and
# license are the connector's own. Connectors pinning the same tools share one installation.
locked_tools() {
    node -e 'const lock = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
delete lock.packages[""];
process.stdout.write(JSON.stringify(lock.packages));' "$1"
}

# `npm ci` the tools `$1/package-lock.json` pins into $NODE_DIR, unless they are there already.
install_js_tools() {
    local lock="$1/package-lock.json" installed="$NODE_DIR/.installed-package-lock.json"
    if [ -f "$installed" ] && [ "$(locked_tools "$lock")" = "$(locked_tools "$installed")" ]; then
        return 0
    fi
    mkdir -p "$NODE_DIR" &&
        cp "$1/package.json" "$lock" "$NODE_DIR/" &&
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) &&
        cp "$lock" "$installed"
}

# Check for node and npm, then install the componentize-qjs that `$1/package-lock.json` pins
# into $NODE_DIR (target/lang-tools/js); skip the connector when either fails.
js_tools() {
    command -v node >/dev/null && command -v npm >/dev/null || skip "node and npm are not installed (needs Node.js >= 18)"
    NODE_DIR="$TOOLS_DIR/js"
    with_tools_lock install_js_tools "$1" || skip "could not install componentize-qjs into $NODE_DIR (npm ci failed)"
}

# Create the virtualenv $VENV and `pip install -r $1/requirements.txt`, unless that file is
# what was installed last.
install_python_tools() {
    if ! cmp -s "$1/requirements.txt" "$VENV/.installed-requirements.txt"; then
        python3 -m venv "$VENV" || return 1
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$1/requirements.txt" || return 1
        cp "$1/requirements.txt" "$VENV/.installed-requirements.txt"
    fi
}

# Check for python3, then install the componentize-py that `$1/requirements.txt` pins into a
# virtualenv at $VENV (target/lang-tools/python); skip the connector when either fails.
python_tools() {
    command -v python3 >/dev/null || skip "python3 is not installed (needs Python >= 3.10 with venv)"
    VENV="$TOOLS_DIR/python"
    with_tools_lock install_python_tools "$1" || skip "could not install componentize-py into $VENV (pip install -r requirements.txt failed)"
    # componentize-py bundles the modules of the first python3 on PATH: the virtualenv's, not
    # a global one (pyenv's, say) whose packages would build here and be missing elsewhere.
    export PATH="$VENV/bin:$PATH"
}

# Publish `$1` as `$2` by rename (same directory, so the rename is atomic).
publish() {
    mv -f "$1" "$2"
    echo "built $2 ($(wc -c <"$2") bytes)" >&2
}
