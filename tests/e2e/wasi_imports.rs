//! Every connector component, whatever language it was written in, imports only the Sluice
//! contract and a small, justified subset of WASI. Toolchains for Python, JavaScript and C pull
//! in more of WASI than a Rust connector does; this check names any import that slips past the
//! allow-list, so a toolchain upgrade cannot quietly widen what connectors may ask for.
//!
//! The host links WASI deny-all (no preopened directories, no environment, no arguments, no
//! sockets, empty stdin; stdout and stderr become the connector's own bounded, scrubbed log
//! lines), so even an allowed import grants nothing; the allow-list keeps the surface small
//! and reviewed.

use crate::languages::component;
use sluice_fixtures::guests;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// Interfaces a connector may import, without their `@version`, and why.
const ALLOWED: &[(&str, &str)] = &[
    ("sluice:connector/types", "the contract's shared types"),
    (
        "sluice:connector/http",
        "the contract: the only way out of the sandbox",
    ),
    (
        "sluice:connector/log",
        "the contract: attributed, rate-limited log lines",
    ),
    (
        "wasi:io/error",
        "stream errors; needed by every stdio-capable toolchain",
    ),
    (
        "wasi:io/poll",
        "pollables behind clocks and streams; nothing to wait on is granted",
    ),
    (
        "wasi:io/streams",
        "stdio streams: stdin is empty, stdout/stderr go to the connector's log",
    ),
    (
        "wasi:clocks/monotonic-clock",
        "timing; reveals nothing about the tenant",
    ),
    (
        "wasi:clocks/wall-clock",
        "dates; reveals nothing about the tenant",
    ),
    (
        "wasi:random/random",
        "language runtimes seed hash tables and PRNGs",
    ),
    (
        "wasi:random/insecure",
        "language runtimes seed hash tables and PRNGs",
    ),
    (
        "wasi:random/insecure-seed",
        "language runtimes seed hash tables and PRNGs",
    ),
    (
        "wasi:cli/environment",
        "libc start-up reads env and args; both are empty",
    ),
    ("wasi:cli/exit", "libc's exit(); it traps the instance, no more"),
    ("wasi:cli/stdin", "libc start-up; stdin is empty"),
    (
        "wasi:cli/stdout",
        "print(); bounded and scrubbed into the connector's log",
    ),
    (
        "wasi:cli/stderr",
        "panics and uncaught exceptions; bounded and scrubbed into the connector's log",
    ),
    ("wasi:cli/terminal-input", "libc's isatty(); there is no terminal"),
    (
        "wasi:cli/terminal-output",
        "libc's isatty(); there is no terminal",
    ),
    ("wasi:cli/terminal-stdin", "libc's isatty(); there is no terminal"),
    (
        "wasi:cli/terminal-stdout",
        "libc's isatty(); there is no terminal",
    ),
    (
        "wasi:cli/terminal-stderr",
        "libc's isatty(); there is no terminal",
    ),
    (
        "wasi:filesystem/types",
        "libc's file API types; with no preopens there is no file to open",
    ),
    (
        "wasi:filesystem/preopens",
        "libc start-up asks for preopened directories; there are none",
    ),
    // CPython (wasi-libc) links its socket module. The host allows no TCP, UDP or name lookup,
    // so every socket is refused before one exists (the hostile guest tries, in sandbox.rs).
    (
        "wasi:sockets/network",
        "CPython's socket module; nothing is reachable",
    ),
    (
        "wasi:sockets/instance-network",
        "CPython's socket module; nothing is reachable",
    ),
    ("wasi:sockets/tcp", "CPython's socket module; TCP is refused"),
    (
        "wasi:sockets/tcp-create-socket",
        "CPython's socket module; TCP is refused",
    ),
    ("wasi:sockets/udp", "CPython's socket module; UDP is refused"),
    (
        "wasi:sockets/udp-create-socket",
        "CPython's socket module; UDP is refused",
    ),
    (
        "wasi:sockets/ip-name-lookup",
        "CPython's socket module; name lookups are refused",
    ),
];

/// Every connector component the tests build, by name. Test guests (hostile, bad-import) are
/// left out on purpose: they import forbidden things to prove the host refuses them.
fn connectors() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![
        ("github (Rust)", guests::GITHUB),
        ("echo (Rust)", guests::ECHO),
        ("gmail (Rust)", guests::GMAIL),
    ];
    for (name, built) in [
        ("slack (Python)", guests::SLACK),
        ("stripe (JavaScript)", guests::STRIPE),
        ("hubspot (C)", guests::HUBSPOT),
    ] {
        if let Some(path) = component(name, built) {
            all.push((name, path));
        }
    }
    all
}

fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(interface, _)| interface)
}

/// The imports of the component at `path`, with their versions.
fn imports_of(path: &str) -> Vec<String> {
    // Compiling without optimisation is enough to read the component's type, and much faster.
    let mut config = Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    let engine = Engine::new(&config).expect("engine");
    let component = Component::from_file(&engine, path).unwrap_or_else(|e| panic!("{path}: {e:#}"));
    component
        .component_type()
        .imports(&engine)
        .map(|(import, _)| import.to_owned())
        .collect()
}

fn is_allowed(import: &str) -> bool {
    ALLOWED.iter().any(|(allowed, _)| *allowed == unversioned(import))
}

/// Lists each connector's imports and fails naming the component and every import that is not
/// on the allow-list.
#[test]
fn connector_imports_stay_within_the_allow_list() {
    let mut violations = Vec::new();
    for (name, path) in connectors() {
        let imports = imports_of(path);
        println!("{name}: {} imports: {}", imports.len(), imports.join(", "));
        for import in imports.into_iter().filter(|import| !is_allowed(import)) {
            violations.push(format!(
                "{name} ({path}) imports `{import}`, which is not allowed"
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "connectors import interfaces outside the WASI allow-list in tests/e2e/wasi_imports.rs:\n  {}",
        violations.join("\n  ")
    );
}

/// The Python and JavaScript connectors keep a real stderr: built with `--stub-wasi`, every WASI
/// call traps, so `print()` would crash the call and an uncaught exception's message would never
/// reach the gateway's log.
#[test]
fn language_connectors_keep_their_stdio() {
    for (name, built) in [
        ("slack (Python)", guests::SLACK),
        ("stripe (JavaScript)", guests::STRIPE),
    ] {
        let Some(path) = component(name, built) else {
            continue;
        };
        let imports = imports_of(path);
        assert!(
            imports
                .iter()
                .any(|import| unversioned(import) == "wasi:cli/stderr"),
            "{name} does not import wasi:cli/stderr (built with --stub-wasi?): {imports:?}"
        );
    }
}

/// The allow-list check itself catches a forbidden import: the bad-import test guest asks for
/// more than any connector may.
#[test]
fn allow_list_rejects_a_component_with_forbidden_imports() {
    let forbidden: Vec<String> = imports_of(guests::BAD_IMPORT)
        .into_iter()
        .filter(|import| !is_allowed(import))
        .collect();
    assert!(
        !forbidden.is_empty(),
        "bad_import should import something off the allow-list"
    );
}
