//! A connector that misbehaves on purpose: one endpoint per attack on the host.
//!
//! `call` sends whatever request the params describe, so tests can aim it at any URL or
//! header the sandbox must refuse; the other endpoints burn CPU, memory or stack, trap, snoop
//! on WASI, flood stdout and stderr, or look for what an earlier request left in memory.

use serde::Deserialize;
use sluice_sdk::http::RequestBuilder;
use sluice_sdk::{
    Auth, Connector, Endpoint, Error, Manifest, Output, Params, Value, export_connector, json, log,
};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

struct Hostile;

#[derive(Deserialize)]
struct Hold {
    count: u64,
}

#[derive(Deserialize)]
struct Call {
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    body: Option<String>,
}

#[derive(Deserialize)]
struct Print {
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    /// How many times each line is written.
    times: u32,
    /// Panic once done, instead of answering.
    #[serde(default)]
    then_panic: bool,
}

#[derive(Deserialize)]
struct Remember {
    secret: String,
}

/// Calls this instance has served; a fresh instance per request always starts at zero.
static CALLS: AtomicU64 = AtomicU64::new(1);
/// Zero-initialised memory a request writes its secret into, to see whether the next request's
/// instance inherits it.
static SCRATCH: [AtomicU8; 64 << 10] = [const { AtomicU8::new(0) }; 64 << 10];

/// Read what an earlier request left in `SCRATCH`, then leave `secret` there (scattered over
/// many pages) and in `CALLS`.
fn remember(secret: &str) -> Value {
    let previous_calls = CALLS.fetch_add(1, Ordering::Relaxed) - 1;
    let page = 4096;
    let residue: Vec<u8> = (0..SCRATCH.len() / page)
        .flat_map(|p| (0..64).map(move |i| SCRATCH[p * page + i].load(Ordering::Relaxed)))
        .filter(|b| *b != 0)
        .collect();
    for p in 0..SCRATCH.len() / page {
        for (i, b) in secret.bytes().take(64).enumerate() {
            SCRATCH[p * page + i].store(b, Ordering::Relaxed);
        }
    }
    json!({"previous_calls": previous_calls, "residue": String::from_utf8_lossy(&residue)})
}

#[derive(Deserialize)]
struct Count {
    count: u32,
}

/// `panic`'s params: log this many lines first (to use up the log budget before the crash).
#[derive(Deserialize)]
struct PanicAfter {
    #[serde(default)]
    log_first: u32,
}

fn recurse(depth: u64) -> u64 {
    // black_box keeps the optimiser from turning this into a loop.
    let frame = std::hint::black_box([depth; 16]);
    if frame[15] == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(frame[0])
}

impl Connector for Hostile {
    fn describe() -> Manifest {
        let endpoints = [
            "call",
            "spin",
            "grow",
            "recurse",
            "panic",
            "flood_log",
            "many_calls",
            "huge_url",
            "snoop",
            "random_bytes",
            "huge_body",
            "big_answer",
            "odd_status",
            "remember",
            "hold_handles",
            "print",
            "probe_then_panic",
            // Declared, with no arm in `invoke`: a connector contradicting itself.
            "forgotten",
        ];
        endpoints.iter().fold(
            Manifest::new("hostile", "Hostile", env!("CARGO_PKG_VERSION"))
                .description("Attacks the host; for tests only")
                .base_url("https://api.hostile.test")
                .auth(Auth::Bearer),
            |manifest, name| manifest.endpoint(Endpoint::new(name, "GET", "/")),
        )
    }

    fn invoke(endpoint: &str, params: Params) -> Result<Output, Error> {
        match endpoint {
            "call" => {
                let p: Call = params.parse()?;
                let mut request = RequestBuilder::new(p.method.unwrap_or_else(|| "GET".into()), p.url);
                for (name, value) in &p.headers {
                    request = request.header(name, value);
                }
                if let Some(body) = p.body {
                    request = request.body(body);
                }
                let response = request.send()?;
                // Report what the guest saw, so tests can check what reached the sandbox.
                let headers: Vec<Value> = ["authorization", "x-echo-authorization"]
                    .iter()
                    .filter_map(|name| response.header(name).map(|v| json!([name, v])))
                    .collect();
                Output::json(
                    response.status(),
                    &json!({
                        "seen_body": String::from_utf8_lossy(response.bytes()),
                        "seen_headers": headers,
                    }),
                )
            }
            "probe_then_panic" => {
                // A refused request, then a crash: the refusal is counted all the same.
                let refused = sluice_sdk::http::get("https://elsewhere.invalid/").send();
                panic!("probed: {}", refused.is_err());
            }
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "hold_handles" => {
                // Every pollable is an entry in the host's resource table, held until dropped.
                let count = params.parse::<Hold>()?.count;
                let held: Vec<_> = (0..count)
                    .map(|_| wasip2::clocks::monotonic_clock::subscribe_duration(1_000_000_000))
                    .collect();
                Output::json(200, &json!({"held": held.len()}))
            }
            "recurse" => Output::json(200, &recurse(0)),
            "panic" => {
                let p: PanicAfter = params.parse()?;
                for step in 0..p.log_first {
                    log::info(&format!("step {step}"));
                }
                panic!("deliberate panic in the middle of a request")
            }
            "flood_log" => {
                let p: Count = params.parse()?;
                let line = "x".repeat(10_000);
                for _ in 0..p.count {
                    log::info(&line);
                }
                Output::json(200, &json!({"logged": p.count}))
            }
            "print" => {
                // Whatever the caller asks for, as often as it asks: floods, credentials, crashes.
                let p: Print = params.parse()?;
                for _ in 0..p.times {
                    if !p.stdout.is_empty() {
                        println!("{}", p.stdout);
                    }
                    if !p.stderr.is_empty() {
                        eprintln!("{}", p.stderr);
                    }
                }
                if p.then_panic {
                    panic!("gave up after printing");
                }
                Output::json(200, &json!({"printed": p.times}))
            }
            "many_calls" => {
                let p: Count = params.parse()?;
                for _ in 0..p.count {
                    sluice_sdk::http::get("/").send()?;
                }
                Output::json(200, &json!({"sent": p.count}))
            }
            "huge_url" => {
                let url = format!("/{}", "a".repeat(8 << 20));
                Ok(sluice_sdk::http::get(url).send()?.into())
            }
            "huge_body" => {
                let p: Count = params.parse()?;
                let body = vec![b'x'; (p.count as usize) << 20];
                Ok(sluice_sdk::http::post("/upload").body(body).send()?.into())
            }
            "big_answer" => {
                // An answer of `count` MiB, made without any upstream call.
                let p: Count = params.parse()?;
                Ok(Output::text(200, "x".repeat((p.count as usize) << 20)))
            }
            "odd_status" => {
                // Answers with the status it is given, HTTP or not.
                let p: Count = params.parse()?;
                Ok(Output::text(p.count as u16, "odd"))
            }
            "snoop" => {
                // Everything WASI might leak: environment, arguments, files, stdin, sockets.
                let env: Vec<(String, String)> = std::env::vars().collect();
                let args: Vec<String> = std::env::args().collect();
                let file = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string());
                let dir = std::fs::read_dir("/")
                    .map(|d| d.count())
                    .map_err(|e| e.to_string());
                let mut stdin = Vec::new();
                let stdin_read =
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut stdin).map_err(|e| e.to_string());
                let socket = std::net::TcpStream::connect("127.0.0.1:1")
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                Output::json(
                    200,
                    &json!({
                        "env": env, "args": args, "file": format!("{file:?}"), "dir": format!("{dir:?}"),
                        "stdin": stdin.len(), "stdin_read": format!("{stdin_read:?}"), "socket": format!("{socket:?}"),
                    }),
                )
            }
            "random_bytes" => {
                // Asks the host for `count` random bytes at once, which the host allocates.
                let p: Count = params.parse()?;
                let bytes = wasip2::random::random::get_random_bytes(u64::from(p.count));
                Output::json(200, &json!({"bytes": bytes.len()}))
            }
            "remember" => {
                let p: Remember = params.parse()?;
                Output::json(200, &remember(&p.secret))
            }
            other => Err(Error::unknown_endpoint(other)),
        }
    }
}

export_connector!(Hostile);
