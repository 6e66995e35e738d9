# Convenience recipes; each wraps plain cargo so nothing here is required.

# Build the example connectors and start the gateway on an embedded SQLite.
run:
    rustup target add wasm32-wasip2
    plugins/build.sh
    cargo run --release -p sluice -- serve --plugins target/wasm32-wasip2/guest

# Run the whole test suite (unit, SDK, end-to-end with real components).
test:
    rustup target add wasm32-wasip2
    cargo test --workspace

# Build every connector, in every language, to a component in target/wasm32-wasip2/guest
# (connectors whose toolchain is missing are skipped loudly; see docs/connectors/).
plugins:
    plugins/build.sh

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Criterion benchmarks of the request path (numbers go to BENCHMARKS.md).
bench:
    cargo bench -p sluice --bench runtime
    cargo bench -p sluice --bench languages

# Load harness: fake upstream, plain proxy (P) and the release gateway (W) on loopback; tables,
# results.json and latency.svg in target/loadbench/. Extra flags pass through, e.g.
# `just loadbench --duration 10` or `just loadbench --memory`.
loadbench *ARGS:
    rustup target add wasm32-wasip2
    cargo plugins
    cargo build --release -p sluice -p sluice-loadbench
    cargo run --release -q -p sluice-loadbench -- {{ARGS}}

# The load harness with every target: S (`wasmtime serve` + a wasi:http hello-world; needs
# `cargo install --locked wasmtime-cli --version 48.0.8`) and the connectors in C, JavaScript
# and Python beside the Rust one.
loadbench-all *ARGS:
    rustup target add wasm32-wasip2
    plugins/build.sh
    cargo build --profile guest --target wasm32-wasip2 -p sluice-guest-hello-http --target-dir target/hello-http
    cargo build --release -p sluice -p sluice-loadbench
    cargo run --release -q -p sluice-loadbench -- --targets D,P,Pt,Px,W,S \
        --connector 'W-c=hubspot/get_contact@target/wasm32-wasip2/guest/hubspot.wasm#{"contact_id":"bench"}' \
        --connector 'W-js=stripe/get_customer@target/wasm32-wasip2/guest/stripe.wasm#{"id":"cus_bench"}' \
        --connector 'W-py=slack/get_user@target/wasm32-wasip2/guest/slack.wasm#{"user":"U0BENCH"}' \
        {{ARGS}}

# Everything CI runs.
ci:
    bash .ci/run
