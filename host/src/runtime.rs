//! The WebAssembly runtime: one engine, connectors compiled once at load, and a fresh,
//! limited Store for every request.
//!
//! - [`bindings`] — the generated types for the WIT contract.
//! - [`manifest`] — validation of what `describe()` returns.
//! - [`schema_cost`] — the bound on the work of validating params against a schema.
//! - [`capability`] — the `http` and `log` imports the host gives each instance.
//! - [`stdio`] — what an instance writes to stdout and stderr, which ends up in its log.
//! - [`limits`] — the per-request memory budget.
//! - [`contract`] — which WIT contract version a component was built against.
//! - [`spare`] — instances prepared before the requests that will use them.
//! - [`pool`] — the pooling allocator and how its slots are shared out.

mod answer_headers;
pub mod bindings;
pub(crate) mod capability;
pub mod contract;
pub mod limits;
mod log_rate;
pub mod manifest;
mod plan;
mod pool;
mod schema_cost;
mod scrub;
mod spare;
mod stdio;
#[cfg(test)]
mod tests;

use crate::cache::{ArtifactCache, Origin};
use crate::egress::{AddressPolicy, HostPattern};
use crate::policy::{BaseUrlRule, Policy};
use crate::upstream::Upstream;
use bindings::{ConnectorError, Output, WitManifest, upgrade, v0_1, v0_2};
use futures::future::BoxFuture;
use limits::MemoryBudget;
use manifest::{AuthScheme, Manifest};
use plan::{CustomPlans, EgressPlan};
use pool::SlotBudget;
pub use scrub::SHORTEST_SCRUBBED;
pub use spare::SPARE_MAX_IDLE;
use spare::{Aftermath, Spare, Spares};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use url::Url;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Resource handles one instance may hold at once (wasmtime's default is a million, some
/// hundreds of MB of host memory); connectors use a handful.
const MAX_HANDLES_PER_INSTANCE: usize = 4096;

/// Most random bytes one WASI call may ask for (seeding a hash map or a UUID takes 16 to 32).
const MAX_RANDOM_BYTES_PER_CALL: u64 = 64 << 10;

/// How often the epoch advances: how often a guest that keeps computing gives its thread back
/// and has its deadline checked.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every connector invocation.
#[derive(Debug, Clone)]
pub struct RuntimeLimits {
    /// Total linear memory of one instance.
    pub memory_bytes: usize,
    /// Wall-clock budget of one invocation, host calls included.
    pub invocation_timeout: Duration,
    /// Budget of `describe()` at load.
    pub describe_timeout: Duration,
    /// Longest a component's compilation is waited for at load. (It cannot be interrupted, but
    /// a component crafted to compile for ever then fails its load instead of holding up the
    /// gateway's start or every later reload.)
    pub compile_timeout: Duration,
    /// Upstream requests one invocation may send.
    pub max_upstream_requests: u32,
    /// Time allowed for one upstream exchange.
    pub upstream_timeout: Duration,
    /// Largest request body a connector may send.
    pub max_request_body: usize,
    /// Largest upstream response body handed to a connector.
    pub max_response_body: usize,
    /// Longest URL a connector may ask for.
    pub max_url_bytes: usize,
    /// Most headers on one upstream request.
    pub max_request_headers: usize,
    /// Largest total size of the headers of one upstream request.
    pub max_header_bytes: usize,
    /// Log lines kept per invocation; later ones are dropped.
    pub max_log_lines: u32,
    /// Longest log line kept; longer ones are truncated.
    pub max_log_line_bytes: usize,
    /// Concurrent instances; also sizes the pooling allocator.
    pub max_instances: u32,
    /// How long a request may wait for a free instance slot.
    pub instance_wait: Duration,
    /// Concurrent invocations of one connector; more are refused with `connector_busy`.
    pub max_in_flight_per_connector: u32,
    /// Which addresses upstream requests may reach.
    pub address_policy: AddressPolicy,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            invocation_timeout: Duration::from_secs(30),
            describe_timeout: Duration::from_secs(5),
            // A large Python connector compiles in about 8 s here, 10× that with a debug build.
            compile_timeout: Duration::from_secs(180),
            max_upstream_requests: 16,
            upstream_timeout: Duration::from_secs(20),
            max_request_body: 8 << 20,
            max_response_body: 16 << 20,
            max_url_bytes: 8 << 10,
            max_request_headers: 64,
            max_header_bytes: 32 << 10,
            max_log_lines: 100,
            max_log_line_bytes: 2 << 10,
            max_instances: 256,
            instance_wait: Duration::from_secs(2),
            max_in_flight_per_connector: 64,
            address_policy: AddressPolicy::PublicOnly,
        }
    }
}

/// The credential the host injects into requests to the connection's origin.
#[derive(Clone)]
pub struct Credential {
    secret: Arc<str>,
    /// The spellings of the secret that are scrubbed from responses, worked out on first use
    /// (for the scheme it was first sent under) and shared by every clone: a cached
    /// connection's credential is cloned for each request.
    forms: Arc<std::sync::OnceLock<(Option<AuthScheme>, scrub::SecretForms)>>,
}

impl Credential {
    /// Wrap a decrypted secret.
    pub fn new(secret: impl Into<Arc<str>>) -> Self {
        Self {
            secret: secret.into(),
            forms: Arc::default(),
        }
    }

    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// The secret's spellings as sent under `auth`: worked out once for the scheme of its
    /// connection's connector, and afresh in the rare call under another (a reloaded connector
    /// that changed its scheme), so no spelling is ever missed.
    pub(crate) fn secret_forms(&self, auth: Option<&AuthScheme>) -> scrub::SecretForms {
        let (first_auth, forms) = self
            .forms
            .get_or_init(|| (auth.cloned(), scrub::SecretForms::of(&self.secret, auth)));
        if first_auth.as_ref() == auth {
            forms.clone()
        } else {
            scrub::SecretForms::of(&self.secret, auth)
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// Why a rejected credential could not be renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalFailure {
    /// The provider refused for good (e.g. `invalid_grant`): the user must reconnect.
    pub revoked: bool,
    /// What went wrong, without secrets.
    pub message: String,
}

/// Gets a new credential after the upstream rejected the current one with a 401 (an OAuth
/// refresh); the host then retries the request once.
pub trait CredentialRenewal: Send + Sync {
    /// A credential to use instead of `rejected`.
    fn renew(&self, rejected: Credential) -> BoxFuture<'static, Result<Credential, RenewalFailure>>;
}

/// Per-request facts the host supplies to an invocation.
#[derive(Clone, Default)]
pub struct CallContext {
    /// The gateway's transaction key, for log attribution.
    pub transaction_key: String,
    /// The connection's credential, if the connector needs one.
    pub credential: Option<Credential>,
    /// The connection's base URL, replacing the connector's default origin.
    pub base_url_override: Option<Url>,
    /// How to renew the credential when the upstream rejects it, if it can be.
    pub renewal: Option<Arc<dyn CredentialRenewal>>,
    /// Told of each request the connector makes that policy refuses, as it happens: counted
    /// whatever the call comes to (a connector that probes and then traps is counted too).
    pub egress_denials: Option<Arc<dyn EgressDenials>>,
}

/// Where refused requests are counted.
pub trait EgressDenials: Send + Sync {
    /// One request of `connector` was refused by policy.
    fn count(&self, connector: &str);
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("transaction_key", &self.transaction_key)
            .field("credential", &self.credential)
            .field("base_url_override", &self.base_url_override)
            .field("renewable", &self.renewal.is_some())
            .field("counts_egress_denials", &self.egress_denials.is_some())
            .finish()
    }
}

/// A compiled connector with its validated manifest, ready to be instantiated per request.
pub struct LoadedConnector {
    /// The validated manifest, its allowed hosts narrowed by the operator's policy.
    pub manifest: Manifest,
    /// The origins the connector itself declared, before any narrowing.
    pub declared_hosts: Vec<HostPattern>,
    /// Hex SHA-256 of the component bytes.
    pub content_hash: String,
    /// The contract version the component was built against, e.g. `0.1.0`.
    pub contract: &'static str,
    /// The file it was loaded from, if any.
    pub source: Option<std::path::PathBuf>,
    /// When it was loaded (Unix seconds).
    pub loaded_at: i64,
    /// The limits this connector runs under (global limits tightened by its policy).
    pub limits: Arc<RuntimeLimits>,
    pre: Arc<VersionedPre>,
    default_plan: Arc<EgressPlan>,
    /// Where the operator lets connections' base URLs point.
    base_url_rule: BaseUrlRule,
    /// Plans around connections' base URLs that passed `base_url_rule`.
    custom_plans: CustomPlans,
    in_flight: Arc<Semaphore>,
    spares: Arc<Spares>,
    /// What its calls may write to the log together.
    log_rate: Arc<log_rate::LogRate>,
}

impl LoadedConnector {
    /// Where a call may send requests: the connector's own plan, or one around the connection's
    /// base URL if the operator's policy allows that URL (else the reason it does not).
    fn plan_for(&self, base_url_override: Option<&Url>) -> Result<Arc<EgressPlan>, String> {
        let Some(custom) = base_url_override else {
            return Ok(self.default_plan.clone());
        };
        if let Some(plan) = self.custom_plans.get(custom) {
            return Ok(plan);
        }
        self.check_base_url(custom)?;
        let plan = Arc::new(EgressPlan::new(&self.manifest, Some(custom)));
        self.custom_plans.insert(custom, plan.clone());
        Ok(plan)
    }

    /// Whether the operator's policy says where this connector's connections' base URLs may
    /// point (`baseUrls`), rather than leaving them to the connector's declared origins.
    pub fn base_urls_set_by_operator(&self) -> bool {
        self.base_url_rule != BaseUrlRule::DeclaredOrigins
    }

    /// Whether a connection of this connector may point at `base_url` (else the reason):
    /// checked when a connection gets one, and again on every call.
    pub fn check_base_url(&self, base_url: &Url) -> Result<(), String> {
        let origin = || base_url.origin().ascii_serialization();
        match &self.base_url_rule {
            BaseUrlRule::Any => Ok(()),
            BaseUrlRule::Listed(allowed) if crate::egress::is_allowed(allowed, base_url) => Ok(()),
            BaseUrlRule::Listed(_) => Err(format!(
                "the base URL ({}) is not one the operator allows for {}",
                origin(),
                self.manifest.id
            )),
            // Local development against fakes: the operator let the gateway reach private
            // upstreams, and a fake's port is new every run.
            BaseUrlRule::DeclaredOrigins
                if crate::egress::is_allowed(&self.manifest.allowed_hosts, base_url)
                    || (self.limits.address_policy == AddressPolicy::AllowPrivate
                        && crate::egress::names_loopback(base_url)) =>
            {
                Ok(())
            }
            BaseUrlRule::DeclaredOrigins if crate::egress::names_loopback(base_url) => Err(format!(
                "the base URL ({}) is on loopback, which connections may name only on a gateway \
                 run with --allow-private-upstreams (local development against fakes)",
                origin()
            )),
            BaseUrlRule::DeclaredOrigins => Err(format!(
                "the base URL ({}) is not among the origins {} declares; the operator may allow \
                 others with `baseUrls` for `{}` in the policy file",
                origin(),
                self.manifest.id,
                self.manifest.id
            )),
        }
    }

    /// Drop this connector's spare instances that no request has taken for `idle_for`; how
    /// many were dropped.
    pub fn drop_idle_spares(&self, idle_for: Duration) -> usize {
        self.spares.drop_idle(idle_for)
    }
}

impl fmt::Debug for LoadedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedConnector")
            .field("id", &self.manifest.id)
            .field("version", &self.manifest.version)
            .field("content_hash", &self.content_hash)
            .finish()
    }
}

/// Why a component could not be loaded. Shown on one line (a log line, `lastError` in
/// `GET /v1/plugins`): wasmtime's own messages may span several, and a manifest error quotes
/// what the connector declared, which could otherwise forge log lines.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a valid component for this host (bad bytes, wrong contract, missing exports).
    #[error("not a loadable connector component: {}", one_line(.0))]
    Component(String),
    /// `describe()` trapped, timed out or returned an invalid manifest.
    #[error("describe() failed: {}", one_line(.0))]
    Describe(String),
    /// The manifest was refused.
    #[error("{}", one_line(&.0.to_string()))]
    Manifest(#[from] manifest::ManifestError),
    /// The operator's policy leaves connector `id` unable to run.
    #[error("{}", one_line(message))]
    Policy {
        /// The connector id.
        id: String,
        /// Why.
        message: String,
    },
}

/// `text` on one line: each run of control characters (line breaks, escapes) and the spaces
/// around it made one space.
fn one_line(text: &str) -> String {
    text.split(char::is_control)
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why an invocation produced no output.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The connector returned one of its typed errors.
    #[error("connector error: {0:?}")]
    Connector(ConnectorError),
    /// The invocation ran past its deadline, this one.
    #[error("the connector ran past its {} ms deadline", .0.as_millis())]
    Timeout(Duration),
    /// The invocation exhausted its memory budget, of this many bytes.
    #[error("the connector exceeded its memory limit of {} MiB", .0 >> 20)]
    MemoryLimit(usize),
    /// The connector is already running as many invocations as its policy allows.
    #[error("the connector is at its concurrency limit")]
    ConnectorBusy,
    /// The connector trapped (panic, unreachable, stack overflow, …).
    #[error("the connector trapped: {detail}")]
    Trap {
        /// What wasmtime says about the trap (a wasm backtrace): for the log only.
        detail: String,
        /// The request's transaction key, under which the connector's output was logged.
        transaction_key: String,
    },
    /// No instance slot became free in time.
    #[error("no connector instance slot is free")]
    Busy,
    /// The connector answered with a status that is not an HTTP status.
    #[error("the connector answered with status {0}, which is not an HTTP status (100-599)")]
    NotAnHttpStatus(u16),
    /// The connector's answer (or what it handed the host at once) was over this many bytes.
    #[error("the connector's answer is larger than {} MiB", .0 >> 20)]
    TooLarge(usize),
    /// The connector put the connection's credential into an upstream request (guessed, as it
    /// never has it), and the call was stopped.
    #[error("the connector put the connection's credential into an upstream request; the call was stopped")]
    SentTheCredential,
    /// The connector asked for more upstream requests than a call may make, this many, and
    /// failed.
    #[error("the connector needed more than {0} upstream requests")]
    TooManyUpstreamRequests(u32),
    /// The connection's base URL is outside what the operator's policy allows.
    #[error("{0}")]
    BaseUrlNotAllowed(String),
    /// The upstream rejected the credential and renewing it failed; whatever the connector
    /// made of the 401 is moot.
    #[error("the credential was rejected and could not be renewed: {}", .failure.message)]
    CredentialRejected {
        /// Why renewing failed.
        failure: RenewalFailure,
        /// Whether an earlier request of the call reached the upstream (see
        /// [`Invoked::upstream_acted`]).
        upstream_acted: bool,
    },
}

/// A passthrough response: status, scrubbed headers and a scrubbed body stream.
pub struct PassthroughResponse {
    /// Upstream status.
    pub status: u16,
    /// Upstream headers.
    pub headers: Vec<bindings::Header>,
    /// The upstream status if the request carried the credential, so the caller can track
    /// whether the credential still works (as [`Invoked::credential_status`]).
    pub credential_status: Option<u16>,
    /// The body as it arrives.
    pub body: futures::stream::BoxStream<'static, Result<bytes::Bytes, crate::upstream::UpstreamError>>,
    /// Why renewing the credential after the upstream refused it failed, if it did: the
    /// caller is told that (as an action's caller is), not the upstream's 401.
    pub renewal_failure: Option<RenewalFailure>,
}

impl fmt::Debug for PassthroughResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassthroughResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A finished invocation.
#[derive(Debug)]
pub struct Invoked {
    /// What the connector returned.
    pub output: Output,
    /// Status of the last upstream response to a request that carried the credential, so the
    /// caller can track whether the credential still works.
    pub credential_status: Option<u16>,
    /// Time spent waiting for upstream responses.
    pub upstream_time: Duration,
    /// Whether a request of the call reached the upstream and was not refused for its
    /// credential (answered otherwise, or not answered at all): the upstream may have acted.
    pub upstream_acted: bool,
    /// Headers of the upstream answer the connector passed on that its caller may need
    /// (`Retry-After`, `Link`, rate limits, request ids), lower-case names; empty when the
    /// connector's status is not the last upstream answer's.
    pub upstream_headers: Vec<(String, String)>,
}

/// The state of one request's Store: deny-all WASI plus the host capabilities.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    budget: MemoryBudget,
    call: capability::CallState,
    /// What the instance wrote to stdout and stderr.
    output: stdio::GuestOutput,
}

impl GuestState {
    /// Log what the instance wrote to stdout and stderr so far, as the current call's lines;
    /// `failed`: the call trapped or was stopped.
    fn log_output(&mut self, failed: bool) {
        self.output.drain_into(&mut self.call, failed);
        if failed {
            self.call.log_last_words();
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The engine, the linker and the shared services every instance uses.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    limits: Arc<RuntimeLimits>,
    upstream: Arc<dyn Upstream>,
    budget: SlotBudget,
    instance_slots: Arc<Semaphore>,
    /// Spare instances still allowed to exist (see [`spare`]).
    spare_allowance: Arc<Semaphore>,
    /// `describe()` calls still allowed to run (see [`pool`]).
    load_slots: Semaphore,
    cache: Option<ArtifactCache>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("limits", &self.limits).finish()
    }
}

impl Runtime {
    /// Build the engine (pooling allocator, epoch interruption) and the linker.
    pub fn new(limits: RuntimeLimits, upstream: Arc<dyn Upstream>) -> anyhow::Result<Self> {
        let budget = SlotBudget::for_limits(&limits);
        let engine = Engine::new(&engine_config(&limits, budget)).map_err(wasmtime_to_anyhow)?;
        spawn_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        // std for wasm32-wasip2 imports wasi:cli, wasi:io and friends even when unused; the
        // WasiCtx behind them grants nothing (no preopens, env, args, sockets or stdin; stdout and
        // stderr go to a bounded buffer that becomes the connector's log).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasmtime_to_anyhow)?;
        // Every supported contract version's imports, side by side.
        v0_2::ConnectorWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(wasmtime_to_anyhow)?;
        v0_1::ConnectorWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(wasmtime_to_anyhow)?;
        Ok(Self {
            engine,
            linker,
            limits: Arc::new(limits),
            upstream,
            budget,
            instance_slots: Arc::new(Semaphore::new(budget.requests as usize)),
            spare_allowance: Arc::new(Semaphore::new(budget.spares as usize)),
            load_slots: Semaphore::new(budget.loads as usize),
            cache: None,
        })
    }

    /// Drop the cached compilation of the component whose SHA-256 is `content_hash`.
    pub fn forget_compiled(&self, content_hash: &str) {
        if let Some(cache) = &self.cache {
            cache.forget(&self.engine, content_hash);
        }
    }

    /// Keep compiled components in `cache` across restarts.
    pub fn with_cache(mut self, cache: ArtifactCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Send a raw request to `connector`'s upstream for a caller (passthrough): the same
    /// allowlist, address policy, header rules, credential injection and scrubbing as a
    /// connector's own requests, without running the connector; both bodies stream.
    pub async fn passthrough(
        &self,
        connector: &LoadedConnector,
        request: bindings::Request,
        body: Option<crate::upstream::RequestBody>,
        context: CallContext,
    ) -> Result<PassthroughResponse, bindings::HttpError> {
        let plan = connector
            .plan_for(context.base_url_override.as_ref())
            .map_err(bindings::HttpError::Denied)?;
        let mut call = capability::CallState::new(
            &connector.manifest.id,
            context,
            plan,
            self.upstream.clone(),
            connector.limits.clone(),
            Some(connector.manifest.auth.clone()),
        );
        let (status, headers, body) = call.stream_for_host(request, body).await?;
        Ok(PassthroughResponse {
            status,
            headers,
            credential_status: call.credential_status(),
            body,
            renewal_failure: call.renewal_failure().cloned(),
        })
    }

    /// The upstream that connectors' HTTP requests go to.
    pub fn upstream(&self) -> Arc<dyn Upstream> {
        self.upstream.clone()
    }

    /// Instance slots currently taken by requests.
    pub fn instances_in_use(&self) -> usize {
        (self.budget.requests as usize).saturating_sub(self.instance_slots.available_permits())
    }

    /// Spare instances alive now (see [`spare`]).
    pub fn spares_alive(&self) -> usize {
        (self.budget.spares as usize).saturating_sub(self.spare_allowance.available_permits())
    }

    /// The limits in force.
    pub fn limits(&self) -> &RuntimeLimits {
        &self.limits
    }

    /// Compile `bytes` (off the async executor), pre-instantiate it, read its manifest, and
    /// apply the operator's `policy` for it.
    pub async fn load(&self, bytes: Vec<u8>, policy: &Policy) -> Result<LoadedConnector, LoadError> {
        // The usual stray file (a text file, a half-written download): say so plainly.
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::Component(
                "not a WebAssembly file (it does not start with the `\\0asm` magic number)".into(),
            ));
        }
        // The usual build mistake: a core module (version 1), which is what `wasm32-wasip1` and
        // `wasm32-unknown-unknown` give; wasmtime's words for it name no way out.
        if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
            return Err(LoadError::Component(
                "a core WebAssembly module, not a component: build the connector with `--target \
                 wasm32-wasip2` (or make a component of the module with `wasm-tools component new`)"
                    .into(),
            ));
        }
        let content_hash = crate::vault::crypto::sha256_hex(&bytes);
        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let hash = content_hash.clone();
        let started = std::time::Instant::now();
        // Compilation takes milliseconds to seconds of CPU: keep it off the async executor.
        let compile = tokio::task::spawn_blocking(move || match cache {
            Some(cache) => cache.load_or_compile(&engine, &bytes, &hash),
            None => Component::new(&engine, &bytes)
                .map(|c| (c, Origin::Compiled))
                .map_err(|e| anyhow::anyhow!("{e:#}")),
        });
        let compile_timeout = self.limits.compile_timeout;
        let (component, origin) = tokio::time::timeout(compile_timeout, compile)
            .await
            .map_err(|_| {
                LoadError::Component(format!(
                    "compiling took longer than {} s; abandoned",
                    compile_timeout.as_secs_f64()
                ))
            })?
            .map_err(|e| LoadError::Component(format!("compilation task failed: {e}")))?
            .map_err(|e| LoadError::Component(format!("{e:#}")))?;
        tracing::debug!(hash = %&content_hash[..12], ?origin, micros = started.elapsed().as_micros() as u64, "component ready");
        if let Some(reason) = pool::oversized(&component) {
            return Err(LoadError::Component(reason));
        }
        let component_type = component.component_type();
        let contract = contract::detect(component_type.exports(&self.engine).map(|(name, _)| name))
            .map_err(|e| LoadError::Component(e.to_string()))?;
        tracing::debug!(?contract, "contract version");
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            LoadError::Component(format!(
                "it imports something this gateway does not provide (a connector may import the \
                 connector contract's `sluice:connector` interfaces and WASI 0.2's, nothing else): {e:#}"
            ))
        })?;
        let pre =
            VersionedPre::new(instance_pre, contract).map_err(|e| LoadError::Component(format!("{e:#}")))?;
        let mut manifest = self.describe(&pre, &self.limits).await?;
        let connector_policy = policy.for_connector(&manifest.id);
        let declared_hosts = manifest.allowed_hosts.clone();
        let (allowed, ignored) = connector_policy.narrow(&declared_hosts);
        if !ignored.is_empty() {
            tracing::warn!(connector = %manifest.id, ?ignored, "policy lists hosts the connector did not declare; a policy only narrows, so they are ignored");
        }
        if allowed.is_empty() && !declared_hosts.is_empty() {
            tracing::warn!(connector = %manifest.id, "the policy's allowedHosts leave this connector no host it declared: every request it makes is refused");
        }
        manifest.allowed_hosts = allowed;
        let limits = Arc::new(connector_policy.limits(&self.limits));
        // A policy that gives less memory than the connector needs to start would load it and
        // then fail every call: start it once under those limits, and refuse it now instead.
        if limits.memory_bytes < self.limits.memory_bytes
            && let Err(error) = self.describe(&pre, &limits).await
        {
            return Err(LoadError::Policy {
                id: manifest.id.clone(),
                message: format!(
                    "under the policy's memory limit of {} MiB the connector does not start ({error}); \
                     raise its memoryMib",
                    limits.memory_bytes >> 20
                ),
            });
        }
        let default_plan = Arc::new(EgressPlan::new(&manifest, None));
        Ok(LoadedConnector {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight_per_connector as usize)),
            manifest,
            declared_hosts,
            content_hash,
            contract: pre.contract(),
            source: None,
            loaded_at: crate::vault::now(),
            limits,
            pre: Arc::new(pre),
            default_plan,
            base_url_rule: connector_policy.base_url_rule(),
            custom_plans: CustomPlans::default(),
            spares: Arc::default(),
            log_rate: Arc::default(),
        })
    }

    /// Start the connector under `limits` and read its manifest.
    async fn describe(&self, pre: &VersionedPre, limits: &Arc<RuntimeLimits>) -> Result<Manifest, LoadError> {
        let plan = Arc::new(EgressPlan::while_loading());
        let call = capability::CallState::new(
            "<loading>",
            CallContext::default(),
            plan,
            self.upstream.clone(),
            limits.clone(),
            None,
        );
        // The semaphore is never closed.
        let _slot = self
            .load_slots
            .acquire()
            .await
            .map_err(|_| LoadError::Describe("no instance slot for loading".into()))?;
        let mut store = new_store(&self.engine, call, limits);
        arm(&mut store, limits, limits.describe_timeout);
        let run = async {
            let instance = pre.instantiate(&mut store).await?;
            instance.describe(&mut store).await
        };
        let outcome = tokio::time::timeout(limits.describe_timeout, run).await;
        store.data_mut().log_output(!matches!(outcome, Ok(Ok(_))));
        // A crash's own words (a panic message through `log`, an exception on stderr) are the
        // last error line: the load error carries them, as the connector's log lines cannot say
        // which file was loading.
        let last_words = store.data().call.last_error_line().map(str::to_owned);
        // The deadline interrupts a guest that keeps computing (a trap) and one that waits.
        let too_long = || {
            format!(
                "it ran past its {} ms deadline (a loop that never ends?)",
                limits.describe_timeout.as_millis()
            )
        };
        let wit = match outcome {
            Ok(Ok(manifest)) => manifest,
            Ok(Err(e)) => {
                // A trap's kind, not wasmtime's whole backtrace of guest frames.
                let what = match e.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => too_long(),
                    Some(trap) => format!("it trapped ({trap})"),
                    None => format!("{e:#}"),
                };
                let said = last_words
                    .map(|line| format!("; the connector wrote: {line}{}", describe_trap_hint(&line)));
                return Err(LoadError::Describe(format!("{what}{}", said.unwrap_or_default())));
            }
            Err(_) => return Err(LoadError::Describe(too_long())),
        };
        Ok(Manifest::from_wit(wit)?)
    }

    /// Run `endpoint` of `connector` in a fresh instance: this thread's spare if it has one
    /// (see [`spare`]), else one made now.
    pub async fn invoke(
        &self,
        connector: &LoadedConnector,
        endpoint: &str,
        params_json: &str,
        context: CallContext,
    ) -> Result<Invoked, InvokeError> {
        // A connector over its own in-flight limit is refused at once; the global pool of
        // instance slots is waited on briefly.
        let _in_flight = connector
            .in_flight
            .try_acquire()
            .map_err(|_| InvokeError::ConnectorBusy)?;
        let slot = tokio::time::timeout(
            self.limits.instance_wait,
            self.instance_slots.clone().acquire_owned(),
        )
        .await
        .map_err(|_| InvokeError::Busy)?
        .map_err(|_| InvokeError::Busy)?;
        let plan = connector
            .plan_for(context.base_url_override.as_ref())
            .map_err(InvokeError::BaseUrlNotAllowed)?;
        let limits = connector.limits.clone();
        let timeout = limits.invocation_timeout;
        let manifest = &connector.manifest;
        let call = capability::CallState::new(
            &manifest.id,
            context,
            plan,
            self.upstream.clone(),
            limits.clone(),
            Some(manifest.auth.clone()),
        )
        .with_log_rate(connector.log_rate.clone());
        // Whatever happens next — an answer, an error, or the caller going away mid-request —
        // the used instance is torn down and this thread's next spare built once the request is
        // over, off its path.
        let spare = connector.spares.take();
        let aftermath = Aftermath::new(slot, self.spare_build(connector));
        let (mut store, instance) = match spare {
            Some(spare) => {
                let (mut store, instance) = spare.into_parts();
                store.data_mut().call = call;
                (store, Some(instance))
            }
            None => (new_store(&self.engine, call, &limits), None),
        };
        arm(&mut store, &limits, timeout);
        let pre = &connector.pre;
        let run = async {
            let instance = match instance {
                Some(instance) => instance,
                None => pre.instantiate(&mut store).await?,
            };
            instance.invoke(&mut store, endpoint, params_json).await
        };
        let outcome = tokio::time::timeout(timeout, run).await;
        // Whatever the outcome (a crash's message is usually the last thing on stderr).
        store.data_mut().log_output(!matches!(outcome, Ok(Ok(_))));
        let result = invoked(&mut store, outcome, limits.max_response_body);
        aftermath.tear_down(store);
        result
    }

    /// How to build this thread's next spare of `connector`, if it has none and the allowance
    /// permits one (see [`spare`]). Claimed before the request runs, so that a request
    /// abandoned half-way still leaves one built.
    fn spare_build(&self, connector: &LoadedConnector) -> Option<impl Future<Output = ()> + Send + 'static> {
        // Claim first: if this thread has a spare or a build under way, nothing shared is touched.
        let claim = connector.spares.claim()?;
        let allowance = self.spare_allowance.clone().try_acquire_owned().ok()?;
        let engine = self.engine.clone();
        let upstream = self.upstream.clone();
        let pre = connector.pre.clone();
        let plan = connector.default_plan.clone();
        let limits = connector.limits.clone();
        let id = connector.manifest.id.clone();
        let auth = connector.manifest.auth.clone();
        Some(async move {
            // The request that takes the spare sets its own call state and deadline.
            let call = capability::CallState::new(
                &id,
                CallContext::default(),
                plan,
                upstream,
                limits.clone(),
                Some(auth),
            );
            let mut store = new_store(&engine, call, &limits);
            arm(&mut store, &limits, limits.invocation_timeout);
            let built = tokio::time::timeout(limits.invocation_timeout, pre.instantiate(&mut store)).await;
            let spare = match built {
                Ok(Ok(instance)) => Some(Spare::new(store, instance, allowance)),
                Ok(Err(error)) => {
                    tracing::debug!(connector = %id, error = %format!("{error:#}"), "could not prepare a spare instance");
                    None
                }
                Err(_) => None,
            };
            claim.fill(spare);
        })
    }
}

/// What an invocation amounts to, read from its store once the guest is done; an answer whose
/// body is over `max_body` is refused.
fn invoked(
    store: &mut Store<GuestState>,
    outcome: Result<wasmtime::Result<Result<Output, ConnectorError>>, tokio::time::error::Elapsed>,
    max_body: usize,
) -> Result<Invoked, InvokeError> {
    let state = store.data_mut();
    if let Some(failure) = state.call.renewal_failure() {
        return Err(InvokeError::CredentialRejected {
            failure: failure.clone(),
            upstream_acted: state.call.upstream_acted(),
        });
    }
    // Whatever the connector made of the refusal: an answer would tell which guess was right.
    if state.call.sent_the_credential() {
        return Err(InvokeError::SentTheCredential);
    }
    match outcome {
        Err(_) => Err(InvokeError::Timeout(state.call.limits().invocation_timeout)),
        Ok(Ok(Ok(output))) if output.body.len() > max_body => Err(InvokeError::TooLarge(max_body)),
        Ok(Ok(Ok(output))) if !(100..=599).contains(&output.status) => {
            Err(InvokeError::NotAnHttpStatus(output.status))
        }
        Ok(Ok(Ok(output))) => {
            let upstream_time = state.call.upstream_time();
            Ok(Invoked {
                upstream_headers: state.call.take_answer_headers(output.status),
                output,
                credential_status: state.call.credential_status(),
                upstream_time,
                upstream_acted: state.call.upstream_acted(),
            })
        }
        Ok(Ok(Err(_))) if state.call.went_over_request_cap() => Err(InvokeError::TooManyUpstreamRequests(
            state.call.limits().max_upstream_requests,
        )),
        Ok(Ok(Err(error))) => Err(InvokeError::Connector(state.call.scrubbed_error(error))),
        Ok(Err(trap)) => Err(classify_trap(
            &trap,
            state.budget.exhausted(),
            state.call.limits(),
            max_body,
            &state.call.context().transaction_key,
        )),
    }
}

/// What to add to the last line a connector wrote before describe() trapped, when that line
/// names neither the field nor what it may be.
fn describe_trap_hint(last_line: &str) -> &'static str {
    // A JavaScript connector's manifest with a misspelt case (`auth: {tag: "apikey"}`).
    if last_line.contains("unknown variant tag") {
        " (a case the contract does not have: `auth`'s tag is one of none, bearer, header, query, \
         basic, oauth2; see the WIT's variants for the others)"
    } else {
        ""
    }
}

/// A store for one instance: its WASI context grants nothing but stdout and stderr, which go
/// to a bounded buffer of its own (see [`stdio`]), its memory is capped by `limits`, and `call`
/// is what its `http` and `log` imports act on.
fn new_store(engine: &Engine, call: capability::CallState, limits: &RuntimeLimits) -> Store<GuestState> {
    // Each handle a guest holds (a pollable, a stream) lives in host memory outside its linear
    // memory cap: bound how many it may hold.
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_HANDLES_PER_INSTANCE);
    let output = stdio::GuestOutput::default();
    // No network through WASI sockets either (wasmtime's default, spelt out: CPython imports
    // them, and a socket created here would be a real one, beside the egress policy).
    let wasi = WasiCtx::builder()
        .stdout(output.stdout())
        .stderr(output.stderr())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        // The host allocates and fills what a guest asks for in one call, outside its memory
        // cap and without yielding: wasmtime's 64 MiB default is far more than seeding needs.
        .max_random_size(MAX_RANDOM_BYTES_PER_CALL)
        .build();
    let state = GuestState {
        wasi,
        table,
        budget: MemoryBudget::new(limits.memory_bytes),
        call,
        output,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.budget);
    store
}

/// Give `store` a fresh allowance of host-call copying and a deadline `deadline` from now.
fn arm(store: &mut Store<GuestState>, limits: &RuntimeLimits, deadline: Duration) {
    // Bound what one call into the host may make it copy (a URL, headers, a body), so a
    // guest cannot make the host allocate more than a request could legitimately carry. The
    // same allowance covers `invoke`'s answer, whose body may be as large as an upstream
    // response handed to the connector.
    let largest_body = limits.max_request_body.max(limits.max_response_body);
    let hostcall_fuel = largest_body + limits.max_url_bytes + limits.max_header_bytes + (64 << 10);
    store.set_hostcall_fuel(hostcall_fuel);
    // A guest still running after one to two ticks gives its serving thread back at every
    // tick from then on: requests sharing the thread keep moving while it runs, and the
    // invocation's wall-clock timeout can fire. Ordinary requests finish well inside a
    // tick and never yield (a yield sends the request to the back of the thread's queue).
    // Past the deadline the guest traps (`Trap::Interrupt`) even if no timer got to run.
    let deadline_at = std::time::Instant::now() + deadline;
    store.epoch_deadline_callback(move |_| {
        Ok(if std::time::Instant::now() >= deadline_at {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
        })
    });
    store.set_epoch_deadline(2);
}

/// A pre-instantiated connector, bound with the bindings of the contract version it was built
/// against; results are converted to the newest types.
enum VersionedPre {
    V0_1(v0_1::ConnectorWorldPre<GuestState>),
    V0_2(v0_2::ConnectorWorldPre<GuestState>),
}

impl VersionedPre {
    fn new(
        instance_pre: wasmtime::component::InstancePre<GuestState>,
        (major, minor, _): (u64, u64, u64),
    ) -> wasmtime::Result<Self> {
        match (major, minor) {
            (0, 1) => Ok(Self::V0_1(v0_1::ConnectorWorldPre::new(instance_pre)?)),
            _ => Ok(Self::V0_2(v0_2::ConnectorWorldPre::new(instance_pre)?)),
        }
    }

    /// The contract version these bindings speak.
    fn contract(&self) -> &'static str {
        match self {
            Self::V0_1(_) => "0.1.0",
            Self::V0_2(_) => "0.2.0",
        }
    }

    /// A new instance in `store`.
    async fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<VersionedInstance> {
        Ok(match self {
            Self::V0_1(pre) => VersionedInstance::V0_1(pre.instantiate_async(store).await?),
            Self::V0_2(pre) => VersionedInstance::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

/// An instance of a connector, bound with the bindings of its contract version.
pub(crate) enum VersionedInstance {
    V0_1(v0_1::ConnectorWorld),
    V0_2(v0_2::ConnectorWorld),
}

impl VersionedInstance {
    async fn describe(&self, store: &mut Store<GuestState>) -> wasmtime::Result<WitManifest> {
        match self {
            Self::V0_1(instance) => {
                let manifest = instance.sluice_connector_connector().call_describe(store).await?;
                Ok(upgrade::manifest(manifest))
            }
            Self::V0_2(instance) => instance.sluice_connector_connector().call_describe(store).await,
        }
    }

    async fn invoke(
        &self,
        store: &mut Store<GuestState>,
        endpoint: &str,
        params_json: &str,
    ) -> wasmtime::Result<Result<Output, ConnectorError>> {
        match self {
            Self::V0_1(instance) => {
                let result = instance
                    .sluice_connector_connector()
                    .call_invoke(store, endpoint, params_json)
                    .await?;
                Ok(result.map(upgrade::output).map_err(upgrade::connector_error))
            }
            Self::V0_2(instance) => {
                instance
                    .sluice_connector_connector()
                    .call_invoke(store, endpoint, params_json)
                    .await
            }
        }
    }
}

/// Decide what a trap means for the caller.
fn classify_trap(
    error: &wasmtime::Error,
    memory_exhausted: bool,
    limits: &RuntimeLimits,
    max_body: usize,
    transaction_key: &str,
) -> InvokeError {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>()
        && *trap == wasmtime::Trap::Interrupt
    {
        return InvokeError::Timeout(limits.invocation_timeout);
    }
    if memory_exhausted {
        return InvokeError::MemoryLimit(limits.memory_bytes);
    }
    // wasmtime's own words for a guest handing the host more than its hostcall allowance
    // (`arm`): an answer, or a request body, far over the limits.
    if format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return InvokeError::TooLarge(max_body);
    }
    // The pool itself ran out (it is sized so that this should not happen): the gateway is at
    // capacity; the connector did nothing wrong.
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return InvokeError::Busy;
    }
    InvokeError::Trap {
        // The cause first and on the one line tagged with the transaction key (in text logs,
        // wasmtime's backtrace would put it on an untagged line twenty lines down).
        detail: match error.downcast_ref::<wasmtime::Trap>() {
            // The guest's frames (wasmtime's backtrace) say little without its symbols.
            Some(trap) => trap.to_string(),
            None => one_line(&format!("{error:#}")),
        },
        transaction_key: transaction_key.to_owned(),
    }
}

fn engine_config(limits: &RuntimeLimits, budget: SlotBudget) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    // Guest recursion must trap well before it could exhaust the fiber's native stack.
    config.max_wasm_stack(512 << 10);
    config.async_stack_size(2 << 20);
    config.concurrency_support(false);
    let pool = pool::pooling_config(limits, budget);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advance the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "could not start the epoch ticker; deadlines rely on wall-clock timeouts");
    }
}

/// `wasmtime::Error` is its own type in wasmtime 48; carry its message into anyhow.
pub(crate) fn wasmtime_to_anyhow(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:#}")
}

/// Whether `manifest` requires a stored connection.
pub fn needs_connection(manifest: &Manifest) -> bool {
    manifest.auth != AuthScheme::None
}
