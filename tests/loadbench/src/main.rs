//! # Sluice load harness
//!
//! Self-contained, loopback only, bounded in time. Starts a fake upstream (hyper, keep-alive,
//! 1 KiB / 64 KiB / 1 MiB JSON), a plain axum + reqwest proxy (P) and the real `sluice` release
//! binary (W) with the GitHub connector, then drives them with its own keep-alive client:
//!
//! - **D** — the upstream directly; **P** — the plain proxy; **Pt** — the plain proxy laid out
//!   like the gateway (thread-per-core); **W** — the gateway; plus any
//!   `--connector` variants (W-py, W-js, …) served by the same gateway process; and, when asked
//!   for, **S** — `wasmtime serve` with a wasi:http hello-world (no upstream call).
//! - closed loop at each `--concurrency`, then a fixed rate (latency from the intended send
//!   time), each repeated `--reps` times with the targets interleaved (D P W, then W P D, …) so
//!   ratios are paired within a repetition; medians are reported.
//! - `--memory`: many requests in flight against a slow upstream, peak RSS of the gateway.
//! - `--soak SECS`: a fixed rate for a long time, RSS at start and end.
//!
//! # Layout
//! - [`upstream`] — the fake upstream; [`proxy`] — P; [`gateway`] — W as a child process;
//!   [`serve`] — S as a child process.
//! - [`announce`] — waiting for a child process to say where it listens.
//! - [`load`] — the load generator; [`stats`] — percentiles; [`report`] — medians, ratios,
//!   tables; [`chart`] — the SVG chart.

mod announce;
mod chart;
mod gateway;
mod load;
mod proxy;
mod report;
mod serve;
mod stats;
mod upstream;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use gateway::{Gateway, GatewaySpec};
use load::{Expect, Live, RunSpec, Target};
use report::RunRecord;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use upstream::{BodySize, FakeUpstream};

/// Load harness for Sluice: D (upstream direct), P (plain axum+reqwest proxy) and W (the
/// gateway running the GitHub connector), all on loopback.
#[derive(Debug, Parser)]
#[command(name = "sluice-loadbench")]
struct Args {
    /// The `sluice` binary [default: the one built beside this harness, in Cargo's target
    /// directory].
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// The GitHub connector component [default: wasm32-wasip2/guest/github.wasm in Cargo's target
    /// directory, else in <workspace>/target].
    #[arg(long)]
    component: Option<PathBuf>,
    /// An extra gateway variant: `LABEL=INTEGRATION/ENDPOINT@PATH[#PARAMS]`, e.g.
    /// `W-js=stripe/get_customer@target/wasm32-wasip2/guest/stripe.wasm#{"id":"cus_bench"}`.
    /// Served by the same gateway process with its own connection on the fake upstream, called
    /// with PARAMS (a JSON object; the upstream answers with the run's body size), or with
    /// `{"owner":"bench","repo":"<size>"}` when there is no `#PARAMS`. Repeatable.
    #[arg(long = "connector", value_name = "LABEL=INTEGRATION/ENDPOINT@PATH[#PARAMS]")]
    connectors: Vec<ExtraConnector>,
    /// A second `sluice` binary to compare W with, run as target `W0` beside W in every
    /// repetition (e.g. the build before an optimisation): the `W vs W0` ratios are paired like
    /// the others, so machine noise cancels.
    #[arg(long, value_name = "PATH")]
    baseline_sluice: Option<PathBuf>,
    /// Which of D, P, Pt, Px, W, S to run (extra connectors and W0 always run). Pt is P laid
    /// out like the gateway: thread-per-core, one client per thread. Px is P in a process of its
    /// own, as the gateway is. S needs `wasmtime` (see --wasmtime) and the hello-world component
    /// (see --hello-component).
    #[arg(long, value_delimiter = ',', default_value = "D,P,W")]
    targets: Vec<String>,
    /// The `wasmtime` CLI for target S (`cargo install --locked wasmtime-cli --version 48.0.8`).
    #[arg(long, default_value = "wasmtime")]
    wasmtime: PathBuf,
    /// The wasi:http hello-world component for target S [default:
    /// <workspace>/target/hello-http/wasm32-wasip2/guest/hello_http.wasm, built by `cargo build
    /// --profile guest --target wasm32-wasip2 -p sluice-guest-hello-http --target-dir
    /// target/hello-http`].
    #[arg(long, value_name = "PATH")]
    hello_component: Option<PathBuf>,
    /// Connection counts for the closed-loop runs.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Upstream body sizes (1k, 64k, 1m).
    #[arg(long, value_delimiter = ',', default_value = "1k,64k,1m")]
    sizes: Vec<BodySize>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Unmeasured seconds at the start of each run (connections open, caches warm).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Repetitions of every run; medians are reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Offered rate for the fixed-rate runs, req/s [default: --rate-fraction of W's
    /// closed-loop throughput at --rate-concurrency, measured in this run].
    #[arg(long)]
    rate: Option<f64>,
    /// Fraction of W's saturation used when --rate is not given.
    #[arg(long, default_value_t = 0.5)]
    rate_fraction: f64,
    /// Connections for the fixed-rate, memory-calibration and soak runs.
    #[arg(long, default_value_t = 16)]
    rate_concurrency: usize,
    /// Skip the fixed-rate runs.
    #[arg(long)]
    no_rate: bool,
    /// In the closed-loop and fixed-rate runs, all workers multiplex their requests over one
    /// HTTP/2 connection (prior knowledge, no TLS) instead of one HTTP/1.1 connection each; a
    /// target that does not speak HTTP/2 that way fails every request (the fake upstream, D).
    #[arg(long)]
    http2: bool,
    /// A request slower than this many seconds is an error.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Directory for results.json, results.md and latency.svg.
    #[arg(long, default_value = "target/loadbench")]
    out: PathBuf,
    /// Memory mode: --in-flight requests held open against a slow upstream; report the
    /// gateway's peak RSS. Skips the throughput matrix.
    #[arg(long)]
    memory: bool,
    /// Concurrent in-flight requests in memory mode.
    #[arg(long, default_value_t = 1000)]
    in_flight: usize,
    /// Upstream delay in memory mode, milliseconds.
    #[arg(long, default_value_t = 2000)]
    slow_ms: u64,
    /// Seconds of load in memory mode.
    #[arg(long, default_value_t = 10.0)]
    memory_secs: f64,
    /// Soak mode: this many seconds at a fixed rate (--rate, or --rate-fraction of
    /// saturation), RSS sampled every second. Skips the throughput matrix.
    #[arg(long, value_name = "SECS")]
    soak: Option<f64>,
    /// Extra `sluice serve` flag (repeatable), e.g. `--gateway-arg=--max-instances=512`.
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    gateway_args: Vec<String>,
    /// `SLUICE_LOG` for the gateway; its log goes to a file in its temporary directory.
    #[arg(long, default_value = "info")]
    gateway_log: String,
    /// Worker threads of the fake upstream's and of P's runtimes (the gateway's tokio runtime
    /// has one per core).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Internal: serve P forwarding to this upstream URL until stdin closes (how Px runs).
    #[arg(long, hide = true, value_name = "UPSTREAM_URL")]
    serve_proxy: Option<String>,
}

/// Length of the hello-world component's reply, `{"hello":"world"}`.
const HELLO_BYTES: usize = 17;

/// `LABEL=INTEGRATION/ENDPOINT@PATH[#PARAMS]`.
#[derive(Debug, Clone)]
struct ExtraConnector {
    label: String,
    integration: String,
    endpoint: String,
    /// Fixed params; `None` for the GitHub shape, whose repository name asks for the size.
    params: Option<serde_json::Map<String, serde_json::Value>>,
    path: PathBuf,
}

impl ExtraConnector {
    /// The execute body of a call in a run with bodies of `size`.
    fn call(&self, size: BodySize) -> Bytes {
        match &self.params {
            None => github_call(size),
            Some(params) => Bytes::from(serde_json::json!({ "params": params }).to_string()),
        }
    }
}

/// `POST /v1/{action}` with `key` and `body`, answered by a 2xx `{"status","data"}` envelope of
/// at least `min_bytes` — the shape of a call to P, Pt and every gateway variant.
fn execute_target(
    name: &str,
    addr: SocketAddr,
    action: &str,
    key: &str,
    body: Bytes,
    min_bytes: usize,
) -> Target {
    Target {
        name: name.into(),
        addr,
        method: http::Method::POST,
        path: format!("/v1/{action}"),
        authorization: Some(format!("Bearer {key}")),
        body,
        expect: Expect::Envelope(min_bytes),
    }
}

/// The `get_repo` call for a repository whose name tells the fake upstream the size.
fn github_call(size: BodySize) -> Bytes {
    Bytes::from(format!(
        r#"{{"params":{{"owner":"bench","repo":"{}"}}}}"#,
        size.label()
    ))
}

impl std::str::FromStr for ExtraConnector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not LABEL=INTEGRATION/ENDPOINT@PATH[#PARAMS]");
        let (label, rest) = s.split_once('=').ok_or_else(bad)?;
        let (call, target) = rest.split_once('@').ok_or_else(bad)?;
        let (integration, endpoint) = call.split_once('/').ok_or_else(bad)?;
        let (path, params) = match target.split_once('#') {
            None => (target, None),
            Some((path, params)) => {
                let params = serde_json::from_str(params)
                    .map_err(|e| format!("{}: PARAMS must be a JSON object: {e}", bad()))?;
                (path, Some(params))
            }
        };
        if [label, integration, endpoint, path].iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Self {
            label: label.into(),
            integration: integration.into(),
            endpoint: endpoint.into(),
            params,
            path: path.into(),
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(upstream) = args.serve_proxy {
        return match proxy::serve_for_parent(upstream, args.server_threads) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: serving the plain proxy: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the load runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!(
                "FAILED: {errors} requests failed (see the errors column and first_error in results.json)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A listener on `127.0.0.1:0` registered with `runtime`, with a backlog deep enough for the
/// memory mode's 1,000 simultaneous connects (std's default of 128 would drop SYNs and add
/// retransmission seconds to the measured latency).
fn listen(runtime: &tokio::runtime::Runtime) -> std::io::Result<tokio::net::TcpListener> {
    // Not `block_on`: callers may be inside another runtime, where it panics.
    let _context = runtime.enter();
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(4096)
}

/// The workspace root, for default paths when run from elsewhere.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn default_path(given: &Option<PathBuf>, relative: &str) -> PathBuf {
    match given {
        Some(path) => path.clone(),
        None if Path::new(relative).exists() => PathBuf::from(relative),
        None => workspace_root().join(relative),
    }
}

/// Where Cargo put what it built beside this harness: `<target dir>/release` holds the gateway
/// it was built with, and `<target dir>/wasm32-wasip2/guest` the Rust connectors — wherever
/// `CARGO_TARGET_DIR` or `build.target-dir` put the target directory.
fn built_beside_this_harness(path_in_target_dir: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target_dir = exe.parent()?.parent()?;
    let path = target_dir.join(path_in_target_dir);
    path.exists().then_some(path)
}

/// `given`, else what Cargo built beside this harness, else `target/…` in the workspace.
fn default_build_output(given: &Option<PathBuf>, path_in_target_dir: &str) -> PathBuf {
    if given.is_none()
        && let Some(path) = built_beside_this_harness(path_in_target_dir)
    {
        return path;
    }
    default_path(given, &format!("target/{path_in_target_dir}"))
}

fn address_of(gateway: &Gateway) -> anyhow::Result<SocketAddr> {
    let authority = gateway.url.strip_prefix("http://").unwrap_or(&gateway.url);
    authority
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("gateway URL {}", gateway.url))
}

/// Everything shared by the runs.
struct Bench {
    args: Args,
    upstream: FakeUpstream,
    gateway: Gateway,
    baseline: Option<Gateway>,
    proxy: Option<proxy::PlainProxy>,
    proxy_thread_per_core: Option<proxy::PlainProxy>,
    separate_proxy: Option<proxy::SeparateProxy>,
    wasmtime_serve: Option<serve::WasmtimeServe>,
}

impl Bench {
    async fn start(args: Args, extra_serve_args: &[String]) -> anyhow::Result<Self> {
        let binary = default_build_output(&args.sluice, "release/sluice");
        let component = default_build_output(&args.component, "wasm32-wasip2/guest/github.wasm");
        if !component.is_file() {
            bail!(
                "no GitHub connector at {}: build the connectors with `cargo plugins` (needs `rustup target add wasm32-wasip2`) or pass --component PATH",
                component.display()
            );
        }
        let upstream = FakeUpstream::start(args.server_threads).context("starting the fake upstream")?;
        let mut components = vec![component];
        let mut integrations = vec!["github".to_owned()];
        for extra in &args.connectors {
            if !extra.path.is_file() {
                bail!(
                    "no component at {} for --connector {}",
                    extra.path.display(),
                    extra.label
                );
            }
            components.push(extra.path.clone());
            if !integrations.contains(&extra.integration) {
                integrations.push(extra.integration.clone());
            }
        }
        let mut serve_args = extra_serve_args.to_vec();
        serve_args.extend(args.gateway_args.iter().cloned());
        let spec = GatewaySpec {
            binary,
            components,
            integrations,
            upstream: upstream.url(),
            extra_args: serve_args,
            log_filter: args.gateway_log.clone(),
        };
        let gateway = Gateway::start(&spec).await?;
        let baseline = match &args.baseline_sluice {
            Some(binary) => Some(
                Gateway::start(&GatewaySpec {
                    binary: binary.clone(),
                    ..spec
                })
                .await
                .context("starting the baseline gateway (W0)")?,
            ),
            None => None,
        };
        let start_proxy = |name: &str, layout| -> anyhow::Result<Option<proxy::PlainProxy>> {
            if !args.targets.iter().any(|t| t == name) {
                return Ok(None);
            }
            let proxy = proxy::PlainProxy::start(upstream.url(), layout)
                .with_context(|| format!("starting {name}"))?;
            Ok(Some(proxy))
        };
        let proxy = start_proxy("P", proxy::Layout::WorkStealing(args.server_threads))?;
        let proxy_thread_per_core = start_proxy("Pt", proxy::Layout::ThreadPerCore(args.server_threads))?;
        let separate_proxy = if args.targets.iter().any(|t| t == "Px") {
            Some(proxy::SeparateProxy::start(&upstream.url(), args.server_threads).await?)
        } else {
            None
        };
        let wasmtime_serve = if args.targets.iter().any(|t| t == "S") {
            let component = default_path(
                &args.hello_component,
                "target/hello-http/wasm32-wasip2/guest/hello_http.wasm",
            );
            Some(
                serve::WasmtimeServe::start(&args.wasmtime, &component)
                    .await
                    .context("starting S")?,
            )
        } else {
            None
        };
        Ok(Self {
            args,
            upstream,
            gateway,
            baseline,
            proxy,
            proxy_thread_per_core,
            separate_proxy,
            wasmtime_serve,
        })
    }

    fn gateway_addr(&self) -> anyhow::Result<SocketAddr> {
        address_of(&self.gateway)
    }

    /// The targets to drive for `size`, in the order of `--targets`, then the extras.
    fn targets(&self, size: BodySize) -> anyhow::Result<Vec<Target>> {
        let get_repo = |name: &str, addr: SocketAddr, key: &str| {
            execute_target(
                name,
                addr,
                "github/get_repo",
                key,
                github_call(size),
                size.bytes(),
            )
        };
        let mut targets = Vec::new();
        for name in &self.args.targets {
            // S's hello-world answers the same 17 bytes whatever the size: one size is enough.
            if name == "S" && self.args.sizes.first() != Some(&size) {
                continue;
            }
            let target = match name.as_str() {
                "D" => Target {
                    name: "D".into(),
                    addr: self.upstream.addr,
                    method: http::Method::GET,
                    path: format!("/repos/bench/{}", size.label()),
                    authorization: Some("Bearer ghp_benchmark_token".into()),
                    body: Bytes::new(),
                    expect: Expect::Exact(size.bytes()),
                },
                "P" => get_repo(
                    "P",
                    self.proxy.as_ref().context("P not started")?.addr,
                    proxy::PROXY_KEY,
                ),
                "Pt" => {
                    let proxy = self.proxy_thread_per_core.as_ref().context("Pt not started")?;
                    get_repo("Pt", proxy.addr, proxy::PROXY_KEY)
                }
                "Px" => {
                    let proxy = self.separate_proxy.as_ref().context("Px not started")?;
                    get_repo("Px", proxy.addr, proxy::PROXY_KEY)
                }
                "W" => get_repo("W", self.gateway_addr()?, &self.gateway.key),
                "S" => Target {
                    name: "S".into(),
                    addr: self.wasmtime_serve.as_ref().context("S not started")?.addr,
                    method: http::Method::GET,
                    path: "/".into(),
                    authorization: None,
                    body: Bytes::new(),
                    expect: Expect::Exact(HELLO_BYTES),
                },
                other => bail!("unknown target `{other}` (expected D, P, Pt, Px, W or S)"),
            };
            targets.push(target);
        }
        if let Some(baseline) = &self.baseline {
            targets.push(get_repo("W0", address_of(baseline)?, &baseline.key));
        }
        for extra in &self.args.connectors {
            let action = format!("{}/{}", extra.integration, extra.endpoint);
            // Another connector may reshape the data: only the 2xx envelope is checked.
            let call = extra.call(size);
            targets.push(execute_target(
                &extra.label,
                self.gateway_addr()?,
                &action,
                &self.gateway.key,
                call,
                0,
            ));
        }
        Ok(targets)
    }

    fn spec(&self, concurrency: usize, rate: Option<f64>) -> RunSpec {
        RunSpec {
            concurrency,
            rate,
            warmup: Duration::from_secs_f64(self.args.warmup),
            duration: Duration::from_secs_f64(self.args.duration),
            timeout: Duration::from_secs_f64(self.args.timeout),
            http2: self.args.http2,
        }
    }

    /// One run, with a check that the gateway is still alive afterwards.
    async fn run_one(
        &mut self,
        target: &Target,
        size: BodySize,
        spec: RunSpec,
        mode: &str,
        rep: usize,
    ) -> anyhow::Result<RunRecord> {
        self.upstream.set_default_size(size);
        let hits_before = self.upstream.hits();
        let outcome = load::run(target, spec, Arc::new(Live::default())).await;
        for gateway in std::iter::once(&mut self.gateway).chain(self.baseline.as_mut()) {
            if !gateway.is_running() {
                bail!(
                    "the gateway (pid {}) exited during a run; its log ends with:\n{}",
                    gateway.pid,
                    gateway.log_tail(30)
                );
            }
        }
        let record = RunRecord {
            size,
            concurrency: spec.concurrency,
            mode: mode.to_owned(),
            rep,
            target: target.name.clone(),
            summary: outcome.summary,
            upstream_hits: self.upstream.hits() - hits_before,
            gateway_rss_kib: match target.name.as_str() {
                "D" | "P" | "Pt" | "Px" => None,
                "W0" => self.baseline.as_ref().and_then(Gateway::rss_kib),
                _ => self.gateway.rss_kib(),
            },
            first_error: outcome.first_error,
        };
        let s = &record.summary;
        println!(
            "  {:>4} c={:<3} {:<10} rep {} {:<6} {:>8.0} req/s  p50 {:>9}  p99 {:>9}  max {:>9}  errors {}{}{}",
            size.label(),
            spec.concurrency,
            mode,
            rep + 1,
            target.name,
            s.rps,
            report::micros(s.p50_us as f64),
            report::micros(s.p99_us as f64),
            report::micros(s.max_us as f64),
            s.errors,
            record
                .gateway_rss_kib
                .map(|kib| format!("  rss {:.0} MiB", kib as f64 / 1024.0))
                .unwrap_or_default(),
            record
                .first_error
                .as_deref()
                .map(|e| format!("  first error: {e}"))
                .unwrap_or_default()
        );
        Ok(record)
    }

    /// Every target `reps` times in alternating order: D P W, W P D, D P W, …
    async fn paired(
        &mut self,
        size: BodySize,
        concurrency: usize,
        rate: Option<f64>,
        runs: &mut Vec<RunRecord>,
    ) -> anyhow::Result<()> {
        let targets = self.targets(size)?;
        let mode = match rate {
            None => "closed".to_owned(),
            Some(rate) => format!("rate {rate:.0}/s"),
        };
        let spec = self.spec(concurrency, rate);
        for rep in 0..self.args.reps {
            let order: Vec<&Target> = if rep % 2 == 0 {
                targets.iter().collect()
            } else {
                targets.iter().rev().collect()
            };
            for target in order {
                runs.push(self.run_one(target, size, spec, &mode, rep).await?);
            }
        }
        Ok(())
    }

    /// W's closed-loop throughput at `concurrency` with 1 KiB bodies: from `runs` if measured,
    /// else from a short run now.
    async fn saturation(&mut self, runs: &[RunRecord], concurrency: usize) -> anyhow::Result<f64> {
        let measured: Vec<f64> = runs
            .iter()
            .filter(|r| {
                r.target == "W"
                    && r.mode == "closed"
                    && r.concurrency == concurrency
                    && r.size == BodySize::K1
            })
            .map(|r| r.summary.rps)
            .collect();
        if !measured.is_empty() {
            return Ok(stats::median(&measured));
        }
        let saved = std::mem::replace(&mut self.args.targets, vec!["W".into()]);
        let target = self.targets(BodySize::K1)?.remove(0);
        self.args.targets = saved;
        println!("calibrating: W closed loop at c={concurrency}");
        let record = self
            .run_one(
                &target,
                BodySize::K1,
                self.spec(concurrency, None),
                "calibrate",
                0,
            )
            .await?;
        if record.summary.errors > 0 || record.summary.rps <= 0.0 {
            bail!(
                "calibration run failed: {}",
                record
                    .first_error
                    .unwrap_or_else(|| "no successful requests".into())
            );
        }
        Ok(record.summary.rps)
    }
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    mem_total: String,
    loadavg_start: String,
    loadavg_end: String,
    git_commit: String,
    finished_at: String,
}

fn machine(loadavg_start: String) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let command = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: field(&cpuinfo, "model name"),
        mem_total: field(&meminfo, "MemTotal"),
        loadavg_start,
        loadavg_end: loadavg(),
        git_commit: command("git", &["rev-parse", "--short", "HEAD"]),
        finished_at: command("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run what the flags ask for; the number of failed requests.
async fn run(args: Args) -> anyhow::Result<u64> {
    let load_start = loadavg();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    if args.memory || args.soak.is_some() {
        let mut errors = 0;
        if args.memory {
            errors += memory_mode(&args).await?;
        }
        if let Some(seconds) = args.soak {
            errors += soak_mode(&args, seconds).await?;
        }
        return Ok(errors);
    }
    if args.reps == 0 || args.concurrency.is_empty() || args.sizes.is_empty() {
        bail!("nothing to run: --reps, --concurrency and --sizes must not be empty");
    }
    let out = args.out.clone();
    let mut bench = Bench::start(args, &[]).await?;
    println!(
        "gateway {} (pid {}), upstream {}, P {}",
        bench.gateway.url,
        bench.gateway.pid,
        bench.upstream.url(),
        bench
            .proxy
            .as_ref()
            .map_or("off".to_owned(), |p| format!("http://{}", p.addr)),
    );
    let rss_start = bench.gateway.rss_kib();
    let mut runs = Vec::new();
    let sizes = bench.args.sizes.clone();
    let levels = bench.args.concurrency.clone();
    for &size in &sizes {
        for &concurrency in &levels {
            bench.paired(size, concurrency, None, &mut runs).await?;
        }
    }
    if !bench.args.no_rate {
        let rate = match bench.args.rate {
            Some(rate) => rate,
            None => {
                let concurrency = bench.args.rate_concurrency;
                bench.saturation(&runs, concurrency).await? * bench.args.rate_fraction
            }
        };
        let concurrency = bench.args.rate_concurrency;
        bench.paired(sizes[0], concurrency, Some(rate), &mut runs).await?;
    }
    let rss_end = bench.gateway.rss_kib();

    let mut pairs: Vec<(String, String)> = vec![
        ("W".into(), "P".into()),
        ("W".into(), "Pt".into()),
        ("P".into(), "D".into()),
        ("Pt".into(), "P".into()),
        ("W".into(), "Px".into()),
        ("Px".into(), "P".into()),
        ("W".into(), "W0".into()),
        ("W".into(), "S".into()),
    ];
    for extra in &bench.args.connectors {
        pairs.push((extra.label.clone(), "P".into()));
        pairs.push((extra.label.clone(), "W".into()));
    }
    let pair_refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let cells = report::aggregate(&runs);
    let ratios = report::ratios(&runs, &pair_refs);
    let table = report::markdown(&cells, &ratios);
    println!("\n{table}");
    let machine = machine(load_start);
    println!(
        "machine: {} × {} ({}), load average {} → {}, commit {}; gateway RSS {} → {} KiB",
        machine.cpus,
        machine.cpu_model,
        machine.mem_total,
        machine.loadavg_start,
        machine.loadavg_end,
        machine.git_commit,
        rss_start.unwrap_or(0),
        rss_end.unwrap_or(0)
    );

    // Chart: closed loop, the smallest size measured, D/P/W and extras.
    let chart_size = sizes[0];
    let xs = bench.args.concurrency.clone();
    let mut series: Vec<chart::Series> = Vec::new();
    for cell in cells
        .iter()
        .filter(|c| c.mode == "closed" && c.size == chart_size)
    {
        let point = (cell.concurrency, cell.p50_us as u32, cell.p99_us as u32);
        match series.iter_mut().find(|s| s.name == cell.target) {
            Some(s) => s.points.push(point),
            None => series.push(chart::Series {
                name: cell.target.clone(),
                points: vec![point],
            }),
        }
    }
    let svg = chart::latency_chart(
        &format!(
            "Latency vs concurrency, {} bodies (median of {} runs)",
            match chart_size {
                BodySize::K1 => "1 KiB",
                BodySize::K64 => "64 KiB",
                BodySize::M1 => "1 MiB",
            },
            bench.args.reps
        ),
        &xs,
        &series,
    );
    let errors: u64 = runs.iter().map(|r| r.summary.errors).sum();
    let json = serde_json::json!({
        "machine": machine,
        "config": {
            "duration_s": bench.args.duration,
            "warmup_s": bench.args.warmup,
            "reps": bench.args.reps,
            "concurrency": bench.args.concurrency,
            "sizes": bench.args.sizes,
            "gateway_log": bench.args.gateway_log,
            "gateway_args": bench.args.gateway_args,
            "sluice": bench.args.sluice,
            "baseline_sluice": bench.args.baseline_sluice,
        },
        "gateway_rss_kib": {"start": rss_start, "end": rss_end},
        "cells": cells,
        "ratios": ratios,
        "runs": runs,
        "errors": errors,
    });
    std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
    std::fs::write(out.join("results.md"), &table)?;
    std::fs::write(out.join("latency.svg"), svg)?;
    println!(
        "wrote {0}/results.json, {0}/results.md, {0}/latency.svg",
        out.display()
    );
    if let Some(baseline) = bench.baseline.take() {
        baseline.stop().await;
    }
    bench.gateway.stop().await;
    Ok(errors)
}

/// Samples of the gateway's RSS (KiB) and the client's in-flight count, every `every`.
fn sample_rss(
    pid: u32,
    every: Duration,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(f64, u64, i64)>> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(rss) = gateway::rss_kib(pid) {
                samples.push((
                    start.elapsed().as_secs_f64(),
                    rss,
                    live.in_flight.load(Ordering::Relaxed),
                ));
            }
            tokio::time::sleep(every).await;
        }
        samples
    })
}

/// `sluice_instances_in_use` from the gateway's /metrics.
async fn instances_in_use(url: &str) -> Option<f64> {
    let client = reqwest::Client::builder().no_proxy().build().ok()?;
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("sluice_instances_in_use "))
        .and_then(|v| v.trim().parse().ok())
}

async fn memory_mode(args: &Args) -> anyhow::Result<u64> {
    let n = args.in_flight.to_string();
    let serve_args = [
        "--max-in-flight-per-connector".to_owned(),
        n.clone(),
        "--max-instances".to_owned(),
        n,
    ];
    let mut only_w = Args::parse_from(["sluice-loadbench"]);
    only_w.sluice = args.sluice.clone();
    only_w.component = args.component.clone();
    only_w.targets = vec!["W".into()];
    only_w.gateway_args = args.gateway_args.clone();
    only_w.gateway_log = args.gateway_log.clone();
    only_w.server_threads = args.server_threads;
    let bench = Bench::start(only_w, &serve_args).await?;
    let target = bench.targets(BodySize::K1)?.remove(0);
    // A few fast requests so the baseline includes a warm instance pool and connections.
    bench.upstream.set_default_size(BodySize::K1);
    let warm = load::run(
        &target,
        RunSpec {
            concurrency: 4,
            rate: None,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            http2: false,
        },
        Arc::new(Live::default()),
    )
    .await;
    let baseline = bench.gateway.rss_kib().unwrap_or(0);
    bench.upstream.set_delay(Duration::from_millis(args.slow_ms));
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(
        bench.gateway.pid,
        Duration::from_millis(100),
        live.clone(),
        stop.clone(),
    );
    let spec = RunSpec {
        concurrency: args.in_flight,
        rate: None,
        // The first round of slow answers is the ramp-up: not measured.
        warmup: Duration::from_millis(args.slow_ms + args.slow_ms / 2),
        duration: Duration::from_secs_f64(args.memory_secs),
        timeout: Duration::from_secs_f64(args.timeout.max(args.slow_ms as f64 / 1000.0 * 3.0)),
        http2: false,
    };
    println!(
        "memory: {} connections, upstream delay {} ms, {} s",
        args.in_flight, args.slow_ms, args.memory_secs
    );
    let url = bench.gateway.url.clone();
    let slow_ms = args.slow_ms;
    let mid = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(slow_ms * 2)).await;
        instances_in_use(&url).await
    });
    let outcome = load::run(&target, spec, live).await;
    let instances = mid.await.ok().flatten();
    let rss_end_of_load = bench.gateway.rss_kib().unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let max_in_flight = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let s = &outcome.summary;
    let md = format!(
        "| in-flight requests (client max) | gateway instances in use (mid-run) | RSS idle after warm-up | RSS peak | RSS at end of load | requests | p50 | p99 | errors |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} | {} | {} | {} |\n",
        max_in_flight,
        instances.map_or("?".into(), |i| format!("{i:.0}")),
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss_end_of_load as f64 / 1024.0,
        s.requests,
        report::micros(s.p50_us as f64),
        report::micros(s.p99_us as f64),
        s.errors,
    );
    println!("\n{md}");
    if let Some(error) = &outcome.first_error {
        println!("first error: {error}");
    }
    let json = serde_json::json!({
        "machine": machine(String::new()),
        "in_flight": args.in_flight,
        "slow_ms": args.slow_ms,
        "seconds": args.memory_secs,
        "warm_errors": warm.summary.errors,
        "rss_kib": {"baseline": baseline, "peak": peak, "end_of_load": rss_end_of_load},
        "max_in_flight": max_in_flight,
        "instances_in_use_mid_run": instances,
        "summary": outcome.summary,
        "first_error": outcome.first_error,
        "samples": samples,
    });
    std::fs::write(args.out.join("memory.json"), serde_json::to_vec_pretty(&json)?)?;
    std::fs::write(args.out.join("memory.md"), &md)?;
    println!("wrote {}/memory.json", args.out.display());
    bench.gateway.stop().await;
    Ok(outcome.summary.errors + warm.summary.errors)
}

async fn soak_mode(args: &Args, seconds: f64) -> anyhow::Result<u64> {
    let mut only_w = Args::parse_from(["sluice-loadbench"]);
    only_w.sluice = args.sluice.clone();
    only_w.component = args.component.clone();
    only_w.targets = vec!["W".into()];
    only_w.gateway_args = args.gateway_args.clone();
    only_w.gateway_log = args.gateway_log.clone();
    only_w.server_threads = args.server_threads;
    only_w.duration = args.duration;
    only_w.warmup = args.warmup;
    let mut bench = Bench::start(only_w, &[]).await?;
    let concurrency = args.rate_concurrency;
    let rate = match args.rate {
        Some(rate) => rate,
        None => bench.saturation(&[], concurrency).await? * args.rate_fraction,
    };
    let target = bench.targets(BodySize::K1)?.remove(0);
    bench.upstream.set_default_size(BodySize::K1);
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(
        bench.gateway.pid,
        Duration::from_secs(1),
        live.clone(),
        stop.clone(),
    );
    println!("soak: {seconds} s at {rate:.0} req/s over {concurrency} connections");
    let outcome = load::run(
        &target,
        RunSpec {
            concurrency,
            rate: Some(rate),
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs_f64(seconds),
            timeout: Duration::from_secs_f64(args.timeout),
            http2: false,
        },
        live,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    if samples.is_empty() {
        bail!("no RSS samples of the gateway (is /proc readable?)");
    }
    // "Start" is after the first tenth of the run, once pools and caches have filled.
    let settle = samples.len() / 10;
    let start = samples[settle].1;
    let end = samples[samples.len() - 1].1;
    let min = samples[settle..].iter().map(|s| s.1).min().unwrap_or(0);
    let max = samples[settle..].iter().map(|s| s.1).max().unwrap_or(0);
    let change = (end as f64 - start as f64) / start.max(1) as f64 * 100.0;
    let s = &outcome.summary;
    let md = format!(
        "| seconds | offered rate | achieved | RSS start (after 10%) | RSS end | min / max after 10% | change | p50 | p99 | max | errors |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {seconds:.0} | {rate:.0}/s | {:.0}/s | {:.1} MiB | {:.1} MiB | {:.1} / {:.1} MiB | {change:+.1}% | {} | {} | {} | {} |\n",
        s.rps,
        start as f64 / 1024.0,
        end as f64 / 1024.0,
        min as f64 / 1024.0,
        max as f64 / 1024.0,
        report::micros(s.p50_us as f64),
        report::micros(s.p99_us as f64),
        report::micros(s.max_us as f64),
        s.errors,
    );
    println!("\n{md}");
    if let Some(error) = &outcome.first_error {
        println!("first error: {error}");
    }
    let json = serde_json::json!({
        "machine": machine(String::new()),
        "seconds": seconds,
        "rate": rate,
        "concurrency": concurrency,
        "rss_kib": {"start": start, "end": end, "min": min, "max": max, "change_percent": change},
        "summary": outcome.summary,
        "first_error": outcome.first_error,
        "samples": samples,
    });
    std::fs::write(args.out.join("soak.json"), serde_json::to_vec_pretty(&json)?)?;
    std::fs::write(args.out.join("soak.md"), &md)?;
    println!("wrote {}/soak.json", args.out.display());
    bench.gateway.stop().await;
    Ok(outcome.summary.errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--connector` specs parse into their parts and reject anything incomplete.
    #[test]
    fn connector_specs_parse() {
        let spec: ExtraConnector = "W-py=github_py/get_repo@target/py/github_py.wasm"
            .parse()
            .expect("valid");
        assert_eq!(spec.label, "W-py");
        assert_eq!(spec.integration, "github_py");
        assert_eq!(spec.endpoint, "get_repo");
        assert_eq!(spec.path, PathBuf::from("target/py/github_py.wasm"));
        assert_eq!(spec.call(BodySize::K64), github_call(BodySize::K64));
        let stripe: ExtraConnector = r#"W-js=stripe/get_customer@stripe.wasm#{"id":"cus_b@n#"}"#
            .parse()
            .expect("valid");
        assert_eq!(stripe.endpoint, "get_customer");
        assert_eq!(stripe.path, PathBuf::from("stripe.wasm"));
        let body: serde_json::Value = serde_json::from_slice(&stripe.call(BodySize::K1)).expect("JSON");
        assert_eq!(body, serde_json::json!({"params": {"id": "cus_b@n#"}}));
        assert!(
            "W-js=stripe/get_customer@x.wasm#[1]"
                .parse::<ExtraConnector>()
                .is_err()
        );
        assert!(
            "W-js=stripe/get_customer@x.wasm#{"
                .parse::<ExtraConnector>()
                .is_err()
        );
        assert!("W-py=github_py@x.wasm".parse::<ExtraConnector>().is_err());
        assert!("W-py=/get_repo@x.wasm".parse::<ExtraConnector>().is_err());
    }
}
