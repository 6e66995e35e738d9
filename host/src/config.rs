//! Command-line interface. Every flag can also be set through an environment variable.

use crate::vault::api_keys::Environment;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Sluice: an API gateway that runs third-party connectors as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// Log line format: `text` for people, `json` for log pipelines.
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Run the gateway and rebuild connectors (crates and `build.sh` directories) on save (hot
    /// reload picks them up).
    Dev(DevArgs),
    /// Scaffold a new connector from a template: a Rust crate, or a JavaScript or Python
    /// directory with a `build.sh`.
    New {
        /// Connector id, as in its URLs: 1-64 of a-z, 0-9, `_` and `-`, not one the gateway's
        /// own routes use.
        name: String,
        /// Directory to create it in.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// The connector's language. JavaScript and Python connectors are built by their
        /// `build.sh` with pinned tools (componentize-qjs, componentize-py) that it installs.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::dev::Language,
        /// Path to the `sluice-sdk` crate (the directory with its Cargo.toml). Needed outside the
        /// Sluice workspace; inside it, the workspace's `sluice-sdk` is used.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage connections (stored credentials).
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Manage the vault's encryption.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Manage connectors.
    #[command(subcommand)]
    Connectors(ConnectorsCommand),
    /// Manage the OAuth apps (client id and secret) of OAuth integrations.
    #[command(subcommand)]
    OauthApps(OAuthAppsCommand),
    /// Show the request log, newest call first (one line per call, tab-separated).
    Logs {
        /// Environment whose calls to show: `test` or `live` (both when left out).
        #[arg(long = "env")]
        environment: Option<String>,
        /// Only calls of this integration (repeatable).
        #[arg(long = "integration")]
        integrations: Vec<String>,
        /// Only calls with this outcome: `ok`, `client_closed` or an error code.
        #[arg(long)]
        outcome: Option<String>,
        /// Only the call with this transaction key (from its `x-transaction-key` header).
        #[arg(long)]
        transaction_key: Option<String>,
        /// Only calls the caller sent with this `X-Request-Id`.
        #[arg(long)]
        request_id: Option<String>,
        /// Only calls made with this connection, by its key (repeatable).
        #[arg(long = "connection-key")]
        connection_keys: Vec<String>,
        /// Only calls of the last this many minutes.
        #[arg(long)]
        since_minutes: Option<u32>,
        /// Most lines shown.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `sluice oauth-apps …`.
#[derive(Debug, Subcommand)]
pub enum OAuthAppsCommand {
    /// Register or replace the OAuth app of an integration.
    Set {
        /// Integration (connector id), e.g. `gmail`.
        integration: String,
        /// Client id issued by the provider.
        #[arg(long)]
        client_id: String,
        /// Client secret issued by the provider (stored encrypted).
        #[arg(long, env = "SLUICE_OAUTH_CLIENT_SECRET", hide_env_values = true)]
        client_secret: String,
        /// Redirect URL registered with the provider; default `<public URL>/connect/oauth/callback`.
        #[arg(long)]
        redirect_url: Option<String>,
        /// A scope to request on top of the connector's defaults (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Authorization endpoint replacing the connector's.
        #[arg(long)]
        authorize_url: Option<String>,
        /// Token endpoint replacing the connector's.
        #[arg(long)]
        token_url: Option<String>,
        /// Allow plain-http authorize and token URLs (a fake provider on loopback in local
        /// development), as the gateway's flag of the same name does.
        #[arg(long, env = "SLUICE_ALLOW_PRIVATE_UPSTREAMS")]
        allow_private_upstreams: bool,
        /// Directory of connector components: the gateway's `--plugins`. The integration's
        /// component is read from it to check that it uses OAuth 2.0.
        #[arg(long, env = "SLUICE_PLUGINS", default_value = "connectors")]
        plugins: PathBuf,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the registered OAuth apps (never their secrets).
    List {
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove the OAuth app of an integration.
    Remove {
        /// Integration (connector id).
        integration: String,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `sluice connectors …`.
#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// Approve the outbound hosts a new version of a connector asks for (prints the difference).
    Approve {
        /// Connector id, e.g. `github`.
        id: String,
        /// Directory of connector components.
        #[arg(long, env = "SLUICE_PLUGINS", default_value = "connectors")]
        plugins: PathBuf,
        /// Print the difference only; approve nothing.
        #[arg(long)]
        dry_run: bool,
        /// The component file (its name in the plugins directory) to approve, when more than
        /// one declares the connector.
        #[arg(long)]
        file: Option<String>,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `sluice vault …`.
#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Write a consistent copy of the database to a new file while gateways keep running
    /// (keep the master key with it: the secrets in it are sealed).
    Backup {
        /// The file to write; it must not exist.
        #[arg(long)]
        to: PathBuf,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Re-encrypt every secret under a new master key while gateways keep running.
    RotateKey {
        /// The new key (64 hex characters); generated when the key file is used.
        #[arg(long, env = "SLUICE_NEW_MASTER_KEY", hide_env_values = true)]
        new_key: Option<String>,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the gateway keeps its state.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory holding the SQLite database and, unless SLUICE_MASTER_KEY is set, the master key file.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
    pub data_dir: PathBuf,
    /// Master key for secrets at rest (64 hex characters). Defaults to `<data-dir>/master.key`.
    #[arg(long, env = "SLUICE_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
}

/// `sluice serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on: an IP address and port (`localhost:PORT` means 127.0.0.1).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// A second address serving only `/healthz`, `/readyz` and `/metrics`, outside
    /// `--max-connections`: probes and scrapes still get through when the API's connections are
    /// all taken, and the port can be kept off the public network.
    #[arg(long, env = "SLUICE_OPS_LISTEN", value_parser = parse_listen)]
    pub ops_listen: Option<SocketAddr>,
    /// Directory of connector components (`*.wasm`).
    #[arg(long, env = "SLUICE_PLUGINS", default_value = "connectors")]
    pub plugins: PathBuf,
    /// Let connectors reach loopback and private-network upstreams (off by default: SSRF guard).
    #[arg(long, env = "SLUICE_ALLOW_PRIVATE_UPSTREAMS")]
    pub allow_private_upstreams: bool,
    /// Public base URL of this gateway (an absolute http(s) URL), used in `action_url`s.
    /// Defaults to `http://<listen>`.
    #[arg(long, env = "SLUICE_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// Memory limit of one connector instance, in MiB (4 to 4096: a 32-bit WebAssembly memory
    /// holds at most 4 GiB).
    #[arg(long, env = "SLUICE_MEMORY_LIMIT_MIB", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(MIN_MEMORY_LIMIT_MIB as u64..=MAX_MEMORY_LIMIT_MIB as u64))]
    pub memory_limit_mib: usize,
    /// Wall-clock limit of one connector invocation, in milliseconds (upstream calls included;
    /// at least 1).
    #[arg(long, env = "SLUICE_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Maximum concurrent connector instances (1 to 100,000; each reserves address space for
    /// its memories up front).
    #[arg(long, env = "SLUICE_MAX_INSTANCES", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_instances: u32,
    /// Threads serving HTTP, each with its own single-threaded runtime and upstream connection
    /// pool; connections are dealt to them in turn. Defaults to one per CPU (1 to 1024).
    #[arg(long, env = "SLUICE_SERVE_THREADS", value_parser = parse_serve_threads)]
    pub serve_threads: Option<std::num::NonZeroUsize>,
    /// Client connections open at once (at least 1); further clients wait in the listen
    /// backlog. Keep it under the process's file-descriptor limit (`ulimit -n`).
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// How long a client connection is kept with no request in flight (also the time a client
    /// has to send a request's headers, and the longest pause allowed in sending a request
    /// body), in milliseconds.
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT_MS", default_value_t = crate::server::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// Admin key protecting `/v1/admin/*` (not empty; use 16 characters or more); the admin API
    /// is disabled without one.
    #[arg(long, env = "SLUICE_ADMIN_KEY", hide_env_values = true, value_parser = parse_admin_key)]
    pub admin_key: Option<String>,
    /// Most connections one environment may hold (`plan_limit_reached` beyond it; at least 1).
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS_PER_ENV", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_env: Option<u32>,
    /// Concurrent invocations of one connector (`429 connector_busy` beyond; at least 1).
    #[arg(long, env = "SLUICE_MAX_IN_FLIGHT_PER_CONNECTOR", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight_per_connector: u32,
    /// Calls one API key may have in flight at once, for keys without a cap of their own
    /// (`429 key_busy` beyond; at least 1). Off by default: one key may then take every slot
    /// of a connector it shares with other keys.
    #[arg(long, env = "SLUICE_MAX_IN_FLIGHT_PER_KEY", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight_per_key: Option<u32>,
    /// Upstream requests one invocation may send (at least 1).
    #[arg(long, env = "SLUICE_MAX_UPSTREAM_REQUESTS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_upstream_requests: u32,
    /// Time allowed for one upstream exchange, in milliseconds (at least 1).
    #[arg(long, env = "SLUICE_UPSTREAM_TIMEOUT_MS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_timeout_ms: u64,
    /// Refresh an OAuth access token when it expires within this many seconds (0 to 30 days).
    #[arg(long, env = "SLUICE_OAUTH_REFRESH_MARGIN_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(0..=MAX_SECONDS_SETTING))]
    pub oauth_refresh_margin_secs: i64,
    /// Lifetime of a connect session (the link an end user opens to connect an account), in
    /// seconds (1 to 30 days).
    #[arg(long, env = "SLUICE_CONNECT_SESSION_TTL_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(i64).range(1..=MAX_SECONDS_SETTING))]
    pub connect_session_ttl_secs: i64,
    /// Largest upstream response body handed to a connector, in MiB (1 to 4096).
    #[arg(long, env = "SLUICE_MAX_RESPONSE_MIB", default_value_t = 16,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BODY_MIB))]
    pub max_response_mib: usize,
    /// Largest request body a connector may send upstream, in MiB (1 to 4096).
    #[arg(long, env = "SLUICE_MAX_REQUEST_BODY_MIB", default_value_t = 8,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BODY_MIB))]
    pub max_request_body_mib: usize,
    /// Largest body a caller may stream through passthrough, in MiB (1 to 1,048,576).
    #[arg(long, env = "SLUICE_MAX_PASSTHROUGH_BODY_MIB", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_PASSTHROUGH_BODY_MIB))]
    pub max_passthrough_body_mib: usize,
    /// Largest request body of an action call, MCP message or API request, in MiB (1 to
    /// 4096): bounds an action's params, so raise it for actions that take files.
    #[arg(long, env = "SLUICE_MAX_CALL_BODY_MIB", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BODY_MIB))]
    pub max_call_body_mib: usize,
    /// Longest MCP tool result text, in KiB (1 to 16,384): what an agent's model reads of an
    /// answer; past it the text is cut and says so (the execute API is not affected).
    #[arg(long, env = "SLUICE_MAX_TOOL_RESULT_KIB", default_value_t = 100,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_TOOL_RESULT_KIB))]
    pub max_tool_result_kib: usize,
    /// Log lines a connector may write per invocation (later ones are dropped).
    #[arg(long, env = "SLUICE_MAX_LOG_LINES", default_value_t = 100)]
    pub max_log_lines: u32,
    /// Operator policy file (JSON): per-connector limits and host narrowing.
    #[arg(long, env = "SLUICE_POLICY")]
    pub policy: Option<PathBuf>,
    /// Do not watch the plugins directory for changes (hot reload is on by default).
    #[arg(long, env = "SLUICE_NO_WATCH")]
    pub no_watch: bool,
    /// Do not keep compiled components in `<data-dir>/cache`.
    #[arg(long, env = "SLUICE_NO_CACHE")]
    pub no_cache: bool,
    /// Days of request log kept (at least 1).
    #[arg(long, env = "SLUICE_LOG_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub log_retention_days: u32,
    /// Write one `request done` line per HTTP request to the process log (target
    /// `sluice::access`). Off by default: every call is already in the request log
    /// (`GET /v1/logs`), and a line per request costs ~10% of the gateway's CPU under load.
    /// Always on under `sluice dev`.
    #[arg(long, env = "SLUICE_ACCESS_LOG")]
    pub access_log: bool,
    /// Keep the CPUs from halting while requests are in flight and for this many microseconds
    /// after the last one, at the lowest scheduling priority: lower latency on virtual machines
    /// whose idle CPUs halt, paid for with otherwise idle CPU time. Off by default.
    #[arg(long, env = "SLUICE_BUSY_POLL_US")]
    pub busy_poll_us: Option<u64>,
    /// Let web pages of this origin call the API from a browser (CORS), e.g.
    /// `https://app.example.com`; repeat the flag (or separate with commas) for more, `*` for
    /// any. Off by default: a key in a web page is visible to whoever loads it.
    #[arg(long = "cors-origin", env = "SLUICE_CORS_ORIGINS", value_delimiter = ',',
          value_parser = crate::http::cors::parse_origin)]
    pub cors_origins: Vec<String>,
    /// State location.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `sluice dev`.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("plugins", |plugins| plugins
    .default_value(DEV_COMPONENTS)
    .help("Directory the built connector components are published to, and served from")))]
pub struct DevArgs {
    /// Directory whose sub-directories are connectors: Rust crates, and directories with a
    /// `build.sh` (JavaScript, Python, C, …).
    #[arg(long, default_value = "plugins")]
    pub sources: PathBuf,
    /// Everything `serve` takes.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Command {
    /// The log filter when `SLUICE_LOG` sets none: under `sluice dev` connectors' debug lines
    /// too (the contract's "diagnostics for connector authors"; their target is `connector`).
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Self::Dev(_) => "info,connector=debug",
            _ => "info",
        }
    }
}

/// Where `sluice dev` publishes the components it builds, unless told otherwise.
pub const DEV_COMPONENTS: &str = "target/sluice-dev/connectors";

/// `sluice keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it once.
    Create {
        /// Environment of the key: test or live.
        #[arg(long = "env", default_value = "test")]
        environment: String,
        /// `*` or a comma-separated list of integrations.
        #[arg(long, default_value = "*")]
        scope: String,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// Expire the key after this many days (1 to 36500, a hundred years).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        expires_in_days: Option<u32>,
        /// Calls allowed per UTC day (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        daily_quota: Option<u32>,
        /// Calls allowed per minute (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        per_minute: Option<u32>,
        /// Calls allowed in flight at once (at least 1; `429 key_busy` beyond). Without it the
        /// gateway's `--max-in-flight-per-key` applies, if set.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_in_flight: Option<u32>,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List keys (prefixes and states only; keys are never shown again).
    List {
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key: give the key itself, its visible prefix (e.g. `sk_test_3f9a`) or its id.
    Revoke {
        /// The key, its prefix or its id, as `keys list` shows them.
        #[arg(value_name = "KEY|PREFIX|ID")]
        key: String,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `sluice connections …`.
#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Store a credential for an integration and print the connection key.
    Add {
        /// Integration (connector id), e.g. `github`.
        integration: String,
        /// The secret: token, API key, or `user:password` for basic auth.
        #[arg(long, env = "SLUICE_CONNECTION_SECRET", hide_env_values = true)]
        secret: String,
        /// Owner of the connection (user, team, …).
        #[arg(long)]
        identity: Option<String>,
        /// Kind of identity: user, team, organization or project (with --identity).
        #[arg(long, requires = "identity")]
        identity_type: Option<String>,
        /// Upstream base URL replacing the connector's default (e.g. GitHub Enterprise).
        #[arg(long)]
        base_url: Option<String>,
        /// Environment: test or live.
        #[arg(long = "env", default_value = "test")]
        environment: String,
        /// Directory of connector components: the gateway's `--plugins`. The integration's
        /// component is read from it to check the secret against its auth scheme.
        #[arg(long, env = "SLUICE_PLUGINS", default_value = "connectors")]
        plugins: PathBuf,
        /// Allow a plain `http` base URL, as a gateway run with `--allow-private-upstreams` does
        /// (otherwise it must be `https`: the credential is sent to it).
        #[arg(long, env = "SLUICE_ALLOW_PRIVATE_UPSTREAMS")]
        allow_private_upstreams: bool,
        /// Put the secret (and base URL, if given) into the active connection this integration
        /// already has for the identity (or for none), keeping its key, instead of adding a
        /// second one (which makes calls that name no connection ambiguous).
        #[arg(long)]
        replace: bool,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List connections, one per line (never their secrets): key, integration, environment,
    /// identity, identity type, state, active or inactive, creation time.
    List {
        /// Only connections of this integration (connector id).
        #[arg(long)]
        integration: Option<String>,
        /// Only connections of this identity.
        #[arg(long)]
        identity: Option<String>,
        /// Only connections of this environment: test or live (default: both).
        #[arg(long = "env")]
        environment: Option<Environment>,
        /// Print a JSON array of connections as the vault API shows them.
        #[arg(long)]
        json: bool,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a connection and its secret.
    Remove {
        /// The connection's key (`test::github::default::3f9a…`) or id (`conn_42`).
        connection: String,
        /// Environment of the connection: test or live (default: whichever holds it).
        #[arg(long = "env")]
        environment: Option<Environment>,
        /// State location.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Smallest `--memory-limit-mib` (and policy `memoryMib`). A Rust connector's linear memory
/// starts at about 1.1 MiB (its stack and data): at 1 MiB not one connector loads, at 2 the
/// Rust, C and JavaScript ones load and answer a small call, and a Python one needs over 8. 4
/// leaves the smallest ones room for a real response.
pub const MIN_MEMORY_LIMIT_MIB: usize = 4;

/// The most memory a connector instance may be given, in MiB: a 32-bit WebAssembly memory
/// holds at most 4 GiB.
pub const MAX_MEMORY_LIMIT_MIB: usize = 4096;

/// Largest body limit in MiB for what passes through a connector (4 GiB, all a 32-bit
/// WebAssembly memory could hold) or makes up an action call.
const MAX_BODY_MIB: u64 = 4096;

/// Largest passthrough body limit in MiB (1 TiB: streamed, never held).
const MAX_PASSTHROUGH_BODY_MIB: u64 = 1 << 20;
/// Upper bound of `--max-tool-result-kib`: the largest upstream answer (16 MiB) whole.
const MAX_TOOL_RESULT_KIB: u64 = 16 << 10;

/// Longest time setting in seconds (30 days), so that adding one to a timestamp cannot overflow.
const MAX_SECONDS_SETTING: i64 = 30 * 86_400;

/// Most serving threads: each holds a runtime, an upstream pool and descriptors of its own;
/// thousands only run out of descriptors, with no gain past the CPUs.
const MAX_SERVE_THREADS: usize = 1024;

fn parse_serve_threads(raw: &str) -> Result<std::num::NonZeroUsize, String> {
    let threads: usize = raw
        .parse()
        .map_err(|error| format!("not a number of threads: {error}"))?;
    std::num::NonZeroUsize::new(threads)
        .filter(|threads| threads.get() <= MAX_SERVE_THREADS)
        .ok_or_else(|| format!("{threads} is not in 1..={MAX_SERVE_THREADS}"))
}

/// `--public-url`: it prefixes every link the gateway hands out (`action_url`s, OAuth
/// redirects), so it must be an absolute http(s) URL, without a query or fragment that the
/// appended paths would land in.
fn parse_public_url(raw: &str) -> Result<String, String> {
    let example = "like https://sluice.example.com";
    let url = url::Url::parse(raw).map_err(|e| format!("not an absolute URL ({e}); give one {example}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("must be an http or https URL with a host, {example}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("must not have a query or fragment, {example}"));
    }
    Ok(raw.to_owned())
}

/// `--listen`: an IP address and port. `localhost` is taken as 127.0.0.1 (what operators mean
/// by it); other names are refused rather than looked up, so that where the gateway listens
/// does not depend on a resolver.
fn parse_listen(raw: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = raw.parse() {
        return Ok(address);
    }
    if let Some(port) = raw.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err("expected an IP address and port, like 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080".into())
}

/// `--admin-key`: an empty one (`SLUICE_ADMIN_KEY=` in an env file) is refused. Taken as given,
/// it would be the digest of the empty string that guards the admin API; taken as unset, the
/// admin API would be off without a word to whoever wrote the line meaning to set it.
fn parse_admin_key(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Err(
            "the admin key is empty: set a long random one (e.g. `openssl rand -hex 32`), or unset \
             SLUICE_ADMIN_KEY and drop --admin-key to leave the admin API disabled"
                .into(),
        );
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
    }

    #[test]
    fn dev_serves_its_own_builds_by_default_and_says_so() {
        let plugins = |args: &[&str]| match parse(args).expect("parses").command {
            Command::Dev(dev) => dev.serve.plugins,
            Command::Serve(serve) => serve.plugins,
            _ => unreachable!("dev or serve"),
        };
        assert_eq!(plugins(&["dev"]), PathBuf::from(DEV_COMPONENTS));
        assert_eq!(
            plugins(&["dev", "--plugins", "connectors"]),
            PathBuf::from("connectors")
        );
        assert_eq!(plugins(&["serve"]), PathBuf::from("connectors"));
        // A connector author sees the connector's debug lines; an operator does not.
        let filter = |args: &[&str]| parse(args).expect("parses").command.default_log_filter();
        assert_eq!(
            (filter(&["dev"]), filter(&["serve"])),
            ("info,connector=debug", "info")
        );
        let help = parse(&["dev", "--help"]).expect_err("help").to_string();
        assert!(help.contains(&format!("[default: {DEV_COMPONENTS}]")), "{help}");
    }

    #[test]
    fn serve_refuses_settings_that_cannot_work() {
        for (flag, value) in [
            ("--public-url", "notaurl"),
            ("--public-url", "/relative/path"),
            ("--public-url", "ftp://sluice.example.com"),
            ("--public-url", "https://sluice.example.com/?x=1"),
            ("--max-instances", "0"),
            ("--timeout-ms", "0"),
            ("--memory-limit-mib", "0"),
            ("--memory-limit-mib", "3"),
            ("--max-in-flight-per-connector", "0"),
            ("--max-connections", "0"),
            ("--admin-key", ""),
            ("--admin-key", "   "),
        ] {
            let error = parse(&["serve", flag, value]).expect_err(flag);
            assert_eq!(
                error.kind(),
                ErrorKind::ValueValidation,
                "{flag} {value}: {error}"
            );
        }
        let error = parse(&["serve", "--admin-key", ""])
            .expect_err("empty")
            .to_string();
        assert!(error.contains("the admin key is empty"), "{error}");
        let cli = parse(&[
            "serve",
            "--public-url",
            "https://sluice.example.com/",
            "--memory-limit-mib",
            "4",
            "--max-instances",
            "1",
            "--timeout-ms",
            "1",
            "--admin-key",
            "short",
            "--listen",
            "localhost:9090",
        ])
        .expect("the smallest working settings");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.memory_limit_mib, MIN_MEMORY_LIMIT_MIB);
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 9090)));
        assert_eq!(args.public_url.as_deref(), Some("https://sluice.example.com/"));
    }

    #[test]
    fn connections_commands_take_only_test_or_live() {
        for command in [&["connections", "list"][..], &["connections", "remove", "conn_1"]] {
            let error = parse(&[command, &["--env", "prod"]].concat()).expect_err("prod");
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{error}");
            assert!(error.to_string().contains("expected test or live"), "{error}");
            assert!(parse(&[command, &["--env", "live"]].concat()).is_ok());
        }
    }

    /// Sizes and times that would wrap when turned into bytes or added to a timestamp are
    /// refused as settings.
    #[test]
    fn sizes_and_times_have_upper_bounds() {
        for (flag, too_large, largest) in [
            ("--max-response-mib", "17592186044416", "4096"),
            ("--max-request-body-mib", "4097", "4096"),
            ("--max-call-body-mib", "4097", "4096"),
            ("--max-passthrough-body-mib", "1048577", "1048576"),
            ("--max-tool-result-kib", "16385", "16384"),
            ("--connect-session-ttl-secs", "9223372036854775807", "2592000"),
            ("--oauth-refresh-margin-secs", "2592001", "2592000"),
        ] {
            let error = parse(&["serve", flag, too_large]).expect_err(flag);
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{flag}: {error}");
            assert!(parse(&["serve", flag, largest]).is_ok(), "{flag}");
        }
    }

    #[test]
    fn keys_expire_after_at_least_a_day() {
        let error = parse(&["keys", "create", "--expires-in-days", "0"]).expect_err("0 days");
        assert_eq!(error.kind(), ErrorKind::ValueValidation, "{error}");
        assert!(parse(&["keys", "create", "--expires-in-days", "1"]).is_ok());
    }
}
