//! Every connector component, whatever language it was written in, imports only the Sluice
//! contract and a small, justified subset of WASI. Toolchains for Python, JavaScript and C pull
//! in more of WASI than a Rust connector does; this check names any import that slips past the
//! allow-list, so a toolchain upgrade cannot quietly widen what connectors may ask for.
//!
//! The host links WASI deny-all (no preopened directories, no environment, no arguments, no
//! sockets, empty stdin, discarded stdout/stderr), so even an allowed import grants nothing;
//! the allow-list keeps the surface small and reviewed.

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
        "stdio streams: stdin is empty, stdout/stderr go nowhere",
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
    ("wasi:cli/stdout", "libc start-up; output is discarded"),
    ("wasi:cli/stderr", "libc start-up; output is discarded"),
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

/// Lists each connector's imports and fails naming the component and every import that is not
/// on the allow-list.
#[test]
fn connector_imports_stay_within_the_allow_list() {
    // Compiling without optimisation is enough to read the component's type, and much faster.
    let mut config = Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    let engine = Engine::new(&config).expect("engine");
    let mut violations = Vec::new();
    for (name, path) in connectors() {
        let component = Component::from_file(&engine, path).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let imports: Vec<String> = component
            .component_type()
            .imports(&engine)
            .map(|(import, _)| import.to_owned())
            .collect();
        println!("{name}: {} imports: {}", imports.len(), imports.join(", "));
        for import in imports {
            if !ALLOWED
                .iter()
                .any(|(allowed, _)| *allowed == unversioned(&import))
            {
                violations.push(format!(
                    "{name} ({path}) imports `{import}`, which is not allowed"
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "connectors import interfaces outside the WASI allow-list in tests/e2e/wasi_imports.rs:\n  {}",
        violations.join("\n  ")
    );
}

/// The allow-list check itself catches a forbidden import: the bad-import test guest asks for
/// more than any connector may.
#[test]
fn allow_list_rejects_a_component_with_forbidden_imports() {
    let mut config = Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    let engine = Engine::new(&config).expect("engine");
    let component = Component::from_file(&engine, guests::BAD_IMPORT).expect("bad_import compiles");
    let forbidden: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(import, _)| import.to_owned())
        .filter(|import| !ALLOWED.iter().any(|(allowed, _)| *allowed == unversioned(import)))
        .collect();
    assert!(
        !forbidden.is_empty(),
        "bad_import should import something off the allow-list"
    );
}
