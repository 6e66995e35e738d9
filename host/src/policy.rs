//! Operator policy: per-connector overrides of the global limits, and narrowing of the hosts a
//! connector declared. Read from a JSON file given with `--policy`:
//!
//! ```json
//! {
//!   "connectors": {
//!     "github": {
//!       "memoryMib": 32, "timeoutMs": 10000, "maxUpstreamRequests": 8, "maxInFlight": 16,
//!       "allowedHosts": ["https://api.github.com"]
//!     }
//!   }
//! }
//! ```
//!
//! A policy can only tighten: limits above the global ones are capped to them, and
//! `allowedHosts` keeps only origins the connector itself declared.
//!
//! The file is read at start and again on `SIGHUP` ([`LivePolicy`]); a policy applies when a
//! connector loads, so a changed one reloads every connector under it.

use crate::config::MIN_MEMORY_LIMIT_MIB;
use crate::egress::HostPattern;
use crate::runtime::RuntimeLimits;
use anyhow::Context;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The whole policy file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Overrides by connector id.
    #[serde(default)]
    pub connectors: HashMap<String, ConnectorPolicy>,
}

/// What the operator sets for one connector.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectorPolicy {
    /// Linear memory cap in MiB.
    pub memory_mib: Option<usize>,
    /// Invocation deadline in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Upstream requests per invocation.
    pub max_upstream_requests: Option<u32>,
    /// Concurrent invocations of this connector.
    pub max_in_flight: Option<u32>,
    /// Time allowed for one upstream exchange, in milliseconds.
    pub upstream_timeout_ms: Option<u64>,
    /// Largest upstream response body handed to the connector, in MiB.
    pub max_response_mib: Option<usize>,
    /// Largest request body the connector may send, in MiB.
    pub max_request_body_mib: Option<usize>,
    /// Log lines kept per invocation.
    pub max_log_lines: Option<u32>,
    /// Origins the connector may reach; must be among those it declared.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins a connection's own base URL may point to (`*.` wildcards; `[]`: none, every
    /// connection uses the connector's origin; `["*"]`: any). Unset: the origins the connector
    /// declared. A call on a connection whose base URL is outside them is refused with
    /// `egress_denied`.
    pub base_urls: Option<Vec<String>>,
}

/// What `baseUrls` says for `*`, standing alone: a connection's base URL may be anywhere.
const ANY_BASE_URL: &str = "*";

/// Where connections' own base URLs may point.
#[derive(Debug, Clone, PartialEq)]
pub enum BaseUrlRule {
    /// The operator said nothing: only to origins the connector declared, so that no API key
    /// widens where the gateway sends requests.
    DeclaredOrigins,
    /// The operator listed these origins.
    Listed(Vec<HostPattern>),
    /// The operator lets every key choose (`["*"]`).
    Any,
}

impl Policy {
    /// Read and validate a policy file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading policy {}", path.display()))?;
        // Name the field at fault (`connectors.github.timeoutMs: invalid type…`).
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        let parsing = || format!("parsing policy {}", path.display());
        let policy: Self = serde_path_to_error::deserialize(&mut deserializer).with_context(parsing)?;
        deserializer.end().with_context(parsing)?;
        for (id, connector) in &policy.connectors {
            if let Some(mib) = connector.memory_mib
                && mib < MIN_MEMORY_LIMIT_MIB
            {
                anyhow::bail!(
                    "policy {}: `memoryMib` {mib} for `{id}` is below the minimum of {MIN_MEMORY_LIMIT_MIB} \
                     MiB, in which no connector can run",
                    path.display()
                );
            }
            // A zero limit would refuse every call: `--timeout-ms` and the other flags refuse 0
            // too. (A zero `memoryMib` is below the minimum, above.)
            if let Some(field) = connector.zero_limit() {
                anyhow::bail!(
                    "policy {}: `{field}` for `{id}` is 0, which no call can work within; leave it out \
                     for the gateway's limit",
                    path.display()
                );
            }
            let base_urls = connector.base_urls.iter().flatten();
            if base_urls.clone().any(|url| url == ANY_BASE_URL)
                && connector.base_urls.as_ref().map(Vec::len) != Some(1)
            {
                anyhow::bail!("policy for `{id}`, `baseUrls`: `*` (any base URL) stands alone");
            }
            let base_urls = base_urls.filter(|url| *url != ANY_BASE_URL);
            let checked = connector
                .allowed_hosts
                .iter()
                .flatten()
                .map(|host| ("allowedHosts", host));
            for (field, host) in checked.chain(base_urls.map(|host| ("baseUrls", host))) {
                HostPattern::parse(host).with_context(|| format!("policy for `{id}`, `{field}`"))?;
            }
        }
        Ok(policy)
    }

    /// The connector ids the policy names that are not in `loaded`, sorted.
    pub fn unknown_connectors<'a>(&self, loaded: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let loaded: std::collections::HashSet<&String> = loaded.into_iter().collect();
        let mut unknown: Vec<String> = self
            .connectors
            .keys()
            .filter(|id| !loaded.contains(id))
            .cloned()
            .collect();
        unknown.sort();
        unknown
    }

    /// `connector.field` of every limit set above the gateway's own, sorted: the policy can only
    /// tighten, so those have no effect, and an operator who meant to raise one should know.
    pub fn above_global_limits(&self, global: &RuntimeLimits) -> Vec<String> {
        let mut above: Vec<String> = self
            .connectors
            .iter()
            .flat_map(|(id, policy)| {
                policy
                    .above_global_limits(global)
                    .into_iter()
                    .map(move |field| format!("{id}.{field}"))
            })
            .collect();
        above.sort();
        above
    }

    /// The overrides for connector `id`.
    pub fn for_connector(&self, id: &str) -> ConnectorPolicy {
        self.connectors.get(id).cloned().unwrap_or_default()
    }
}

/// The policy in force, and the file it is read from again when the operator asks.
#[derive(Debug, Default)]
pub struct LivePolicy {
    file: Option<PathBuf>,
    current: RwLock<Arc<Policy>>,
}

impl LivePolicy {
    /// Read `file` (none: the empty policy), refusing a policy that is not valid.
    pub fn load(file: Option<PathBuf>) -> anyhow::Result<Self> {
        let policy = match &file {
            Some(path) => Policy::load(path)?,
            None => Policy::default(),
        };
        Ok(Self {
            file,
            current: RwLock::new(Arc::new(policy)),
        })
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Read the file again. `Ok(true)` if the policy changed (it is in force from now on),
    /// `Ok(false)` if not or if there is no file; an error, with the old policy still in
    /// force, if the file no longer holds a valid policy.
    pub fn reread(&self) -> anyhow::Result<bool> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let policy = Policy::load(path)?;
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if **current == policy {
            return Ok(false);
        }
        *current = Arc::new(policy);
        Ok(true)
    }
}

impl ConnectorPolicy {
    /// Every limit this entry can set: its name in the file, the value set, and the gateway's
    /// own, both in the file's units (MiB, milliseconds, counts).
    fn limit_fields(&self, gateway: &RuntimeLimits) -> [(&'static str, Option<u64>, u64); 8] {
        let mib = |bytes: usize| (bytes >> 20) as u64;
        let millis = |time: Duration| u64::try_from(time.as_millis()).unwrap_or(u64::MAX);
        let set = |value: Option<usize>| value.map(|v| v as u64);
        [
            ("memoryMib", set(self.memory_mib), mib(gateway.memory_bytes)),
            ("timeoutMs", self.timeout_ms, millis(gateway.invocation_timeout)),
            (
                "maxUpstreamRequests",
                self.max_upstream_requests.map(u64::from),
                gateway.max_upstream_requests.into(),
            ),
            (
                "maxInFlight",
                self.max_in_flight.map(u64::from),
                gateway.max_in_flight_per_connector.into(),
            ),
            (
                "upstreamTimeoutMs",
                self.upstream_timeout_ms,
                millis(gateway.upstream_timeout),
            ),
            (
                "maxResponseMib",
                set(self.max_response_mib),
                mib(gateway.max_response_body),
            ),
            (
                "maxRequestBodyMib",
                set(self.max_request_body_mib),
                mib(gateway.max_request_body),
            ),
            (
                "maxLogLines",
                self.max_log_lines.map(u64::from),
                gateway.max_log_lines.into(),
            ),
        ]
    }

    /// The fields of this entry set above the gateway's own limit (which then applies).
    fn above_global_limits(&self, global: &RuntimeLimits) -> Vec<&'static str> {
        self.limit_fields(global)
            .into_iter()
            .filter(|(_, set, gateway)| set.is_some_and(|set| set > *gateway))
            .map(|(field, _, _)| field)
            .collect()
    }

    /// The first limit this entry sets to 0, within which no call could work (`maxLogLines` 0
    /// works: the connector's log lines are dropped).
    fn zero_limit(&self) -> Option<&'static str> {
        self.limit_fields(&RuntimeLimits::default())
            .into_iter()
            .find(|(field, set, _)| *set == Some(0) && *field != "maxLogLines")
            .map(|(field, _, _)| field)
    }

    /// The global limits with this policy's overrides, never looser than the global ones.
    pub fn limits(&self, global: &RuntimeLimits) -> RuntimeLimits {
        let mut limits = global.clone();
        if let Some(mib) = self.memory_mib {
            limits.memory_bytes = mib.saturating_mul(1 << 20).min(global.memory_bytes);
        }
        if let Some(ms) = self.timeout_ms {
            limits.invocation_timeout = Duration::from_millis(ms).min(global.invocation_timeout);
        }
        if let Some(max) = self.max_upstream_requests {
            limits.max_upstream_requests = max.min(global.max_upstream_requests);
        }
        if let Some(max) = self.max_in_flight {
            limits.max_in_flight_per_connector = max.min(global.max_in_flight_per_connector);
        }
        if let Some(ms) = self.upstream_timeout_ms {
            limits.upstream_timeout = Duration::from_millis(ms).min(global.upstream_timeout);
        }
        if let Some(mib) = self.max_response_mib {
            limits.max_response_body = mib.saturating_mul(1 << 20).min(global.max_response_body);
        }
        if let Some(mib) = self.max_request_body_mib {
            limits.max_request_body = mib.saturating_mul(1 << 20).min(global.max_request_body);
        }
        if let Some(lines) = self.max_log_lines {
            limits.max_log_lines = lines.min(global.max_log_lines);
        }
        limits
    }

    /// Where connections' base URLs may point.
    pub fn base_url_rule(&self) -> BaseUrlRule {
        match &self.base_urls {
            None => BaseUrlRule::DeclaredOrigins,
            Some(hosts) if hosts.iter().any(|h| h == ANY_BASE_URL) => BaseUrlRule::Any,
            Some(hosts) => {
                BaseUrlRule::Listed(hosts.iter().filter_map(|h| HostPattern::parse(h).ok()).collect())
            }
        }
    }

    /// `declared` narrowed to the operator's list; origins the connector did not declare are
    /// ignored (a policy never widens), and returned so they can be reported.
    pub fn narrow(&self, declared: &[HostPattern]) -> (Vec<HostPattern>, Vec<String>) {
        let Some(allowed) = &self.allowed_hosts else {
            return (declared.to_vec(), Vec::new());
        };
        let allowed: Vec<HostPattern> = allowed
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
            .collect();
        let kept = declared.iter().filter(|d| allowed.contains(d)).cloned().collect();
        let ignored = allowed
            .iter()
            .filter(|a| !declared.contains(a))
            .map(ToString::to_string)
            .collect();
        (kept, ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_only_tighten() {
        let global = RuntimeLimits::default();
        let policy = ConnectorPolicy {
            memory_mib: Some(16),
            timeout_ms: Some(999_999),
            max_upstream_requests: Some(4),
            ..ConnectorPolicy::default()
        };
        let limits = policy.limits(&global);
        assert_eq!(limits.memory_bytes, 16 << 20);
        assert_eq!(
            limits.invocation_timeout, global.invocation_timeout,
            "cannot loosen the deadline"
        );
        assert_eq!(limits.max_upstream_requests, 4);
        assert_eq!(policy.above_global_limits(&global), ["timeoutMs"]);
        let file: Policy = serde_json::from_value(serde_json::json!({"connectors": {
            "github": {"memoryMib": 4096, "maxLogLines": 1, "maxResponseMib": 1024},
            "echo": {"maxInFlight": 1}
        }}))
        .expect("policy");
        assert_eq!(
            file.above_global_limits(&global),
            ["github.maxResponseMib", "github.memoryMib"]
        );
    }

    #[test]
    fn narrowing_never_widens() {
        let declared = vec![
            HostPattern::parse("https://api.github.com").expect("pattern"),
            HostPattern::parse("https://uploads.github.com").expect("pattern"),
        ];
        let policy = ConnectorPolicy {
            allowed_hosts: Some(vec![
                "https://api.github.com".into(),
                "https://evil.example".into(),
            ]),
            ..ConnectorPolicy::default()
        };
        let (kept, ignored) = policy.narrow(&declared);
        assert_eq!(kept, vec![declared[0].clone()]);
        assert_eq!(ignored, vec!["https://evil.example:443".to_owned()]);
        assert_eq!(ConnectorPolicy::default().narrow(&declared).0, declared);
    }

    #[test]
    fn policy_files_are_validated() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"connectors": {"github": {"memoryMib": 8, "allowedHosts": ["https://api.github.com"]}}}"#,
        )?;
        assert_eq!(Policy::load(&good)?.for_connector("github").memory_mib, Some(8));
        let typo = dir.path().join("typo.json");
        std::fs::write(&typo, r#"{"connectors": {"github": {"memoryMB": 8}}}"#)?;
        assert!(Policy::load(&typo).is_err());
        let wrong_type = dir.path().join("wrong-type.json");
        std::fs::write(
            &wrong_type,
            r#"{"connectors": {"github": {"timeoutMs": "soon"}}}"#,
        )?;
        let error = format!("{:#}", Policy::load(&wrong_type).expect_err("a string"));
        assert!(
            error.contains("connectors.github.timeoutMs"),
            "names the field: {error}"
        );
        let trailing = dir.path().join("trailing.json");
        std::fs::write(&trailing, r#"{"connectors": {}} {"#)?;
        assert!(Policy::load(&trailing).is_err(), "text after the policy");
        let bad_host = dir.path().join("bad.json");
        std::fs::write(
            &bad_host,
            r#"{"connectors": {"github": {"allowedHosts": ["api.github.com"]}}}"#,
        )?;
        assert!(Policy::load(&bad_host).is_err());
        let bad_base_url = dir.path().join("bad-base-url.json");
        std::fs::write(
            &bad_base_url,
            r#"{"connectors": {"github": {"baseUrls": ["ftp://x"]}}}"#,
        )?;
        let error = format!("{:#}", Policy::load(&bad_base_url).expect_err("ftp"));
        assert!(error.contains("policy for `github`, `baseUrls`"), "{error}");
        let any_and_more = dir.path().join("any-and-more.json");
        std::fs::write(
            &any_and_more,
            r#"{"connectors": {"github": {"baseUrls": ["*", "https://ghe.acme.corp"]}}}"#,
        )?;
        let error = format!("{:#}", Policy::load(&any_and_more).expect_err("* and more"));
        assert!(error.contains("`*` (any base URL) stands alone"), "{error}");
        let zero = dir.path().join("zero.json");
        std::fs::write(&zero, r#"{"connectors": {"echo": {"timeoutMs": 0}}}"#)?;
        let error = format!("{:#}", Policy::load(&zero).expect_err("zero"));
        assert!(error.contains("`timeoutMs` for `echo` is 0"), "{error}");
        let too_small = dir.path().join("small.json");
        std::fs::write(&too_small, r#"{"connectors": {"github": {"memoryMib": 1}}}"#)?;
        let error = format!("{:#}", Policy::load(&too_small).expect_err("1 MiB"));
        assert!(error.contains("below the minimum of 4 MiB"), "{error}");
        Ok(())
    }

    #[test]
    fn a_live_policy_changes_only_to_a_valid_different_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("policy.json");
        std::fs::write(&file, r#"{"connectors": {"github": {"memoryMib": 8}}}"#)?;
        let live = LivePolicy::load(Some(file.clone()))?;
        assert!(!live.reread()?, "the same policy is no change");
        std::fs::write(&file, r#"{"connectors": {"github": {"memoryMib": 16}}}"#)?;
        assert!(live.reread()?);
        assert_eq!(live.current().for_connector("github").memory_mib, Some(16));
        std::fs::write(&file, r#"{"connectors": {"github": {"memoryMib": "lots"}}}"#)?;
        assert!(live.reread().is_err());
        assert_eq!(
            live.current().for_connector("github").memory_mib,
            Some(16),
            "an invalid file leaves the policy in force"
        );
        assert!(!LivePolicy::load(None)?.reread()?, "no file, nothing to read");
        Ok(())
    }

    #[test]
    fn connectors_the_policy_names_but_are_not_loaded_are_found() {
        let policy: Policy = serde_json::from_value(serde_json::json!({
            "connectors": {"github": {}, "gihtub": {}, "slack": {}}
        }))
        .expect("policy");
        let loaded = ["github".to_owned(), "echo".to_owned()];
        assert_eq!(policy.unknown_connectors(&loaded), ["gihtub", "slack"]);
    }
}
