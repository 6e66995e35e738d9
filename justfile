# Convenience recipes; each wraps plain cargo so nothing here is required.

# Build the example connectors and start the gateway on an embedded SQLite.
run:
    rustup target add wasm32-wasip2
    cargo plugins
    cargo run --release -p sluice -- serve --plugins target/wasm32-wasip2/guest

# Run the whole test suite (unit, SDK, end-to-end with real components).
test:
    rustup target add wasm32-wasip2
    cargo test --workspace

# Build every connector to a component.
plugins:
    cargo plugins

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Criterion benchmarks of the request path (numbers go to BENCHMARKS.md).
bench:
    cargo bench -p sluice --bench runtime

# Everything CI runs.
ci:
    bash .ci/run
