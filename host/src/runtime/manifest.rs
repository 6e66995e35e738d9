//! The host's validated view of a connector's `describe()` answer.

use super::bindings::{AuthScheme as WitAuth, WitManifest};
use crate::egress::HostPattern;
use std::collections::HashMap;
use std::sync::Arc;
use url::Url;

/// How the host authenticates upstream requests for a connector's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScheme {
    /// No credential; the connector can be called without a connection.
    None,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// The secret in this (lower-case) header.
    Header(http::HeaderName),
    /// The secret in this query parameter.
    Query(String),
    /// `Authorization: Basic base64(<secret>)`, the secret being `user:password`.
    Basic,
    /// OAuth 2.0; the access token is sent as a bearer token.
    OAuth2(OAuth2Config),
}

/// OAuth 2.0 endpoints and defaults declared by the connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    /// The provider's authorization endpoint.
    pub authorize_url: String,
    /// The provider's token endpoint.
    pub token_url: String,
    /// Scopes requested by default.
    pub scopes: Vec<String>,
    /// Extra authorize-URL parameters.
    pub authorize_params: Vec<(String, String)>,
}

impl AuthScheme {
    /// Whether calls need a stored connection (credential) at all.
    pub fn needs_connection(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// Where in a request the credential travels, in words (`header x-api-key`, `query
    /// api_key`, `authorization bearer`); none without a credential. An OAuth token travels
    /// as a bearer token does.
    pub fn placement(&self) -> Option<String> {
        match self {
            Self::None => None,
            Self::Bearer | Self::OAuth2(_) => Some("authorization bearer".into()),
            Self::Basic => Some("authorization basic".into()),
            Self::Header(name) => Some(format!("header {name}")),
            Self::Query(name) => Some(format!("query {name}")),
        }
    }

    /// The header the credential travels in, when it has one of its own (not `Authorization`).
    pub fn credential_header(&self) -> Option<&http::HeaderName> {
        match self {
            Self::Header(name) => Some(name),
            _ => None,
        }
    }

    /// The query parameter the credential travels in, if it does.
    pub fn credential_query_param(&self) -> Option<&str> {
        match self {
            Self::Query(param) => Some(param),
            _ => None,
        }
    }
}

/// One action, with its params schema parsed once at load.
#[derive(Debug, Clone)]
pub struct EndpointInfo {
    /// Machine name used in URLs.
    pub name: String,
    /// Human title.
    pub title: String,
    /// Upstream HTTP method.
    pub method: String,
    /// Upstream path template.
    pub path: String,
    /// Description.
    pub description: String,
    /// JSON Schema of `params`.
    pub params_schema: serde_json::Value,
    /// `params_schema`, compiled once at load.
    pub validator: Arc<jsonschema::Validator>,
    /// Examples: (title, params).
    pub examples: Vec<(String, serde_json::Value)>,
    /// The catalog's id of this action, e.g. `github-create-issue` ([`action_key`]).
    pub action_key: String,
    /// This action's name as an LLM tool ([`tool_name`]).
    pub tool_name: String,
}

/// Where `schema` says `nullable` (JSON pointers): OpenAPI 3.0's keyword, which JSON Schema
/// ignores, so a schema pasted from an OpenAPI document refuses the `null` its author meant
/// to allow. The loader warns of each; values that are data (`enum`, `default`, …) and the
/// names of properties are not looked at.
pub fn nullable_keywords(schema: &serde_json::Value) -> Vec<String> {
    const SCHEMA_MAPS: &[&str] = &[
        "properties",
        "patternProperties",
        "$defs",
        "definitions",
        "dependentSchemas",
    ];
    const DATA: &[&str] = &["enum", "const", "default", "examples", "example"];
    fn visit(value: &serde_json::Value, pointer: String, names_schemas: bool, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(members) => {
                for (key, member) in members {
                    let at = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                    if names_schemas {
                        visit(member, at, false, found);
                    } else if key == "nullable" {
                        found.push(at);
                    } else if !DATA.contains(&key.as_str()) {
                        visit(member, at, SCHEMA_MAPS.contains(&key.as_str()), found);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    visit(item, format!("{pointer}/{index}"), false, found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    visit(schema, String::new(), false, &mut found);
    found
}

/// The catalog's stable id of an action: the connector id and the endpoint name in kebab case,
/// e.g. `github-create-issue`.
pub fn action_key(connector: &str, endpoint: &str) -> String {
    format!("{connector}-{}", endpoint.replace('_', "-"))
}

/// Longest tool name this gateway gives. LLM APIs accept 64 characters (OpenAI's and
/// Anthropic's `^[a-zA-Z0-9_-]{1,64}$`), and an agent's client sends every tool to its model,
/// where one name over the limit fails the whole request, not just that tool; but MCP clients
/// put their own prefix before a server's names (Claude Code's `mcp__{server}__`, 13 characters
/// for a server named `sluice`), so 16 are left for that.
pub const MAX_TOOL_NAME: usize = 48;

/// An action's name as an LLM tool: `{connector}__{endpoint}` (connector ids cannot contain
/// `__`, so the first `__` splits it), or, where that is longer than [`MAX_TOOL_NAME`], its
/// first 39 characters and 8 hex digits of a hash of the whole, which keeps distinct actions
/// distinct.
pub fn tool_name(connector: &str, endpoint: &str) -> String {
    use sha2::Digest;
    let full = format!("{connector}__{endpoint}");
    if full.len() <= MAX_TOOL_NAME {
        return full;
    }
    let digest = sha2::Sha256::digest(full.as_bytes());
    let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    // Ids and endpoint names are ASCII, so any byte index is a character boundary.
    format!("{}_{suffix}", &full[..MAX_TOOL_NAME - 1 - suffix.len()])
}

/// A connector's manifest after validation.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Identifier used in URLs.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The connector's own version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Catalog category.
    pub category: String,
    /// Icon URL for catalogs, if the connector gave one.
    pub icon_url: Option<String>,
    /// Default upstream base URL (no trailing slash).
    pub base_url: Url,
    /// Declared origins.
    pub allowed_hosts: Vec<HostPattern>,
    /// Auth scheme.
    pub auth: AuthScheme,
    /// Endpoints in declaration order.
    pub endpoints: Vec<EndpointInfo>,
    endpoint_index: HashMap<String, usize>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A field has a value the host cannot use.
    #[error("manifest field `{field}` is invalid: {reason}")]
    Invalid {
        /// Which field.
        field: String,
        /// Why.
        reason: String,
    },
}

/// The authorization request's parameters the gateway sets itself (RFC 6749 4.1.1, RFC 7636).
const GATEWAY_AUTHORIZE_PARAMS: [&str; 7] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// Longest message of one params error, in bytes: the library's messages quote the value,
/// which may be a whole email body.
const MAX_PARAMS_ERROR_BYTES: usize = 300;

/// What a caller is told of one way its params fail the schema. Alternatives (`anyOf`,
/// `oneOf`) say what each would need, rather than quoting the whole value back; every
/// message is cut to [`MAX_PARAMS_ERROR_BYTES`].
fn params_error_message(error: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as Kind;
    let message = match error.kind() {
        Kind::AnyOf { context } | Kind::OneOfNotValid { context } => {
            let keyword = match error.kind() {
                Kind::AnyOf { .. } => "anyOf",
                _ => "oneOf",
            };
            let needs: Vec<String> = context
                .iter()
                .take(5)
                .enumerate()
                .map(|(i, errors)| {
                    let said: Vec<String> = errors.iter().take(2).map(params_error_message).collect();
                    format!("({}) {}", i + 1, said.join(", "))
                })
                .collect();
            format!(
                "matches none of the alternatives `{keyword}` allows: {}",
                needs.join("; ")
            )
        }
        Kind::OneOfMultipleValid { .. } => {
            "matches more than one of the alternatives `oneOf` allows; exactly one must match".to_owned()
        }
        Kind::Not { .. } => "matches what the schema's `not` forbids".to_owned(),
        _ => error.to_string(),
    };
    crate::error::cut_to(message, MAX_PARAMS_ERROR_BYTES)
}

/// Longest name, title or category, in bytes.
const MAX_NAME_BYTES: usize = 200;
/// Longest description, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 8 << 10;

/// Refuse text a connector publishes (in the catalog, tool lists, the connect page) that is too
/// long or holds control characters (line breaks only where `multiline`) or bidirectional
/// formatting characters, which would make it read as other text to a user or an operator.
fn check_display_text(
    field: &str,
    text: &str,
    max_bytes: usize,
    multiline: bool,
) -> Result<(), ManifestError> {
    if text.len() > max_bytes {
        return Err(invalid(
            field,
            format!("is {} bytes; at most {max_bytes} are allowed", text.len()),
        ));
    }
    let allowed = |c: char| multiline && (c == '\n' || c == '\t');
    if let Some(c) = text
        .chars()
        .find(|c| (c.is_control() && !allowed(*c)) || crate::vault::checks::is_bidi_control(*c))
    {
        return Err(invalid(
            field,
            format!(
                "holds a control or text-direction character ({})",
                c.escape_default()
            ),
        ));
    }
    Ok(())
}

/// Most bytes of params schemas, examples, texts, names and paths one connector may describe
/// (the largest real APIs' connectors need a few hundred KiB).
const MAX_DESCRIBED_BYTES: usize = 2 << 20;

/// Most endpoints one connector may declare (each compiles a validator and is served in the
/// catalog; the largest real APIs have a few hundred operations).
const MAX_ENDPOINTS: usize = 1_000;

/// What an author can do about a schema error whose words are the validator library's own
/// (`at`: where in the schema; `said`: the library's message; `value`: what is there), if it
/// is one of those.
fn schema_error_hint(at: &str, said: &str, value: Option<&serde_json::Value>) -> Option<&'static str> {
    if said.contains("resolve-http") || said.contains("resolve-file") || said.contains("custom resolver") {
        return Some(
            " (remote and file `$ref`s are never fetched: put the schema under `$defs` and refer to \
             it as `#/$defs/…`)",
        );
    }
    if said.contains("is not a \"regex\"") {
        // The library says the same of a pattern too large once compiled as of one it cannot
        // run: the engine itself tells them apart.
        let pattern = value.and_then(serde_json::Value::as_str).unwrap_or_default();
        let compiled = regex::RegexBuilder::new(pattern)
            .size_limit(MAX_COMPILED_PATTERN_BYTES)
            .build();
        if let Err(regex::Error::CompiledTooBig(_)) = compiled {
            return Some(
                " (compiled, the pattern would take more than 256 KiB: bound its repetitions, \
                 e.g. `{1,64}` rather than `{1,500}` around a group)",
            );
        }
        return Some(
            " (patterns run on a linear-time engine: backreferences and look-around are not \
             supported)",
        );
    }
    // The keyword, not a property that happens to be named `type`.
    if at.ends_with("/type") && !at.ends_with("/properties/type") {
        return Some(
            " (`type` is one of \"string\", \"number\", \"integer\", \"boolean\", \"object\", \
             \"array\", \"null\", or a list of them)",
        );
    }
    None
}

/// Largest a schema's compiled `pattern` may be: a pattern like `a{1000}{1000}` would otherwise
/// take memory by the megabyte for every connector that loads it.
const MAX_COMPILED_PATTERN_BYTES: usize = 256 << 10;

/// Most `pattern`s (and `patternProperties` keys) one connector's schemas may hold: with
/// [`MAX_COMPILED_PATTERN_BYTES`], what its patterns may take compiled is bounded too.
const MAX_PATTERNS: usize = 256;

/// How many regular expressions `schema` holds: `pattern` strings and `patternProperties` keys.
fn patterns_in(schema: &serde_json::Value) -> usize {
    match schema {
        serde_json::Value::Object(members) => members
            .iter()
            .map(|(name, value)| {
                let own = match (name.as_str(), value) {
                    ("pattern", serde_json::Value::String(_)) => 1,
                    ("patternProperties", serde_json::Value::Object(keys)) => keys.len(),
                    _ => 0,
                };
                own + patterns_in(value)
            })
            .sum(),
        serde_json::Value::Array(items) => items.iter().map(patterns_in).sum(),
        _ => 0,
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The methods an endpoint may declare (it documents the upstream call in the catalog).
pub(crate) const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// At most this many schema violations are reported for one call.
const MAX_REPORTED_ERRORS: usize = 20;

/// The first path segments of the gateway's own `/v1/...` routes. A connector with one of these
/// ids would share URLs with them (`POST /v1/vault/connections` is the vault API, not the
/// `connections` action of a connector `vault`), so none may take them.
const RESERVED_IDS: &[&str] = &[
    "actions",
    "admin",
    "available-actions",
    "available-connectors",
    "connect",
    "logs",
    "passthrough",
    "plugins",
    "tools",
    "vault",
];

/// Why `id` cannot be a connector's id, if it cannot: the rule the loader applies to what
/// `describe()` returns, and that `sluice new` applies to the name it is given.
pub fn check_connector_id(id: &str) -> Result<(), String> {
    if !is_identifier(id) {
        return Err("must be 1-64 of a-z, 0-9, `_` and `-`".into());
    }
    if id.contains("__") {
        // Tool names join the connector id and the endpoint name with `__`.
        return Err("must not contain `__`".into());
    }
    if id.ends_with('_') {
        // `crm_` + `list` would be the tool `crm___list`, which is `crm`'s `_list` too.
        return Err("must not end with `_` (tool names join it to an action's name with `__`)".into());
    }
    if RESERVED_IDS.contains(&id) {
        return Err(format!(
            "`{id}` is taken by the gateway's own routes (/v1/{id}/...)"
        ));
    }
    Ok(())
}

/// Identifiers appear in URLs and metrics labels: keep them boring.
fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Manifest {
    /// Refuse a manifest that would send a credential in the clear: with a credential to
    /// inject (or, for OAuth, the operator's client secret and users' refresh tokens to send),
    /// every origin it names must be `https`. (A gateway that may reach private upstreams
    /// does not ask this: local development talks plain HTTP to fakes on loopback.)
    pub fn check_credentials_travel_encrypted(&self) -> Result<(), ManifestError> {
        if matches!(self.auth, AuthScheme::None) {
            return Ok(());
        }
        let refused = |field: &str, what: &str| {
            invalid(
                field,
                format!(
                    "`{what}` is plain http, so the connection's credential would travel in the clear: \
                     use https (plain http is allowed only on a gateway started with \
                     --allow-private-upstreams, for local development)"
                ),
            )
        };
        if self.base_url.scheme() == "http" {
            return Err(refused("base-url", self.base_url.as_str()));
        }
        if let Some(host) = self.allowed_hosts.iter().find(|host| host.is_plain_http()) {
            return Err(refused("allowed-hosts", &host.to_string()));
        }
        if let AuthScheme::OAuth2(oauth) = &self.auth {
            for (field, url) in [
                ("authorize-url", &oauth.authorize_url),
                ("token-url", &oauth.token_url),
            ] {
                if Url::parse(url).is_ok_and(|url| url.scheme() == "http") {
                    return Err(refused(&format!("auth.oauth2.{field}"), url));
                }
            }
        }
        Ok(())
    }

    /// Validate what a connector's `describe()` returned.
    pub fn from_wit(wit: WitManifest) -> Result<Self, ManifestError> {
        check_connector_id(&wit.id).map_err(|reason| invalid("id", reason))?;
        // Schemas, examples and texts are compiled, kept and served to anyone reading the
        // catalog or /openapi.json (which needs no key): a describe() of megabytes would cost
        // every one of them.
        let described: usize = wit
            .endpoints
            .iter()
            .map(|e| {
                e.params_schema.len()
                    + e.examples
                        .iter()
                        .map(|x| x.params_json.len() + x.title.len())
                        .sum::<usize>()
                    + e.title.len()
                    + e.description.len()
                    + e.path.len()
                    + e.name.len()
            })
            .sum::<usize>()
            + wit.description.len();
        if wit.endpoints.len() > MAX_ENDPOINTS {
            return Err(invalid(
                "endpoints",
                format!(
                    "{} endpoints; a connector may declare at most {MAX_ENDPOINTS}",
                    wit.endpoints.len()
                ),
            ));
        }
        if described > MAX_DESCRIBED_BYTES {
            return Err(invalid(
                "endpoints",
                format!(
                    "its schemas, examples and texts come to {} KiB; a connector may describe at most {} KiB",
                    described >> 10,
                    MAX_DESCRIBED_BYTES >> 10
                ),
            ));
        }
        check_display_text("name", &wit.name, MAX_NAME_BYTES, false)?;
        check_display_text("description", &wit.description, MAX_DESCRIPTION_BYTES, true)?;
        check_display_text("category", &wit.category, MAX_NAME_BYTES, false)?;
        for endpoint in &wit.endpoints {
            let field = format!("endpoints.{}", endpoint.name.escape_default());
            check_display_text(&format!("{field}.title"), &endpoint.title, MAX_NAME_BYTES, false)?;
            check_display_text(
                &format!("{field}.description"),
                &endpoint.description,
                MAX_DESCRIPTION_BYTES,
                true,
            )?;
        }
        if let Some(icon) = wit.icon_url.as_deref().filter(|icon| !icon.is_empty())
            && !Url::parse(icon).is_ok_and(|url| url.scheme() == "https")
        {
            return Err(invalid(
                "icon-url",
                format!("`{}` is not an https URL", icon.escape_default()),
            ));
        }
        // Semantic: operators compare versions (a reload logs old → new, approvals name it),
        // and clients may pin one.
        if let Err(error) = semver::Version::parse(&wit.version) {
            return Err(invalid(
                "version",
                format!(
                    "`{}` is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.4.0): {error}",
                    wit.version
                ),
            ));
        }
        let base_url = Url::parse(&wit.base_url).map_err(|e| {
            let hint = match wit.base_url.is_empty() {
                true => "empty: the manifest must set one, e.g. `.base_url(\"https://api.example.com\")`"
                    .to_owned(),
                false => format!(
                    "`{}` is not an absolute URL ({e}); give one such as `https://api.example.com`",
                    wit.base_url
                ),
            };
            invalid("base-url", hint)
        })?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host().is_none() {
            return Err(invalid("base-url", "must be an http(s) URL with a host"));
        }
        let allowed_hosts = wit
            .allowed_hosts
            .iter()
            .map(|h| HostPattern::parse(h).map_err(|e| invalid("allowed-hosts", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if !crate::egress::is_allowed(&allowed_hosts, &base_url) {
            return Err(invalid(
                "allowed-hosts",
                format!(
                    "must include the base URL's origin, `{}`",
                    base_url.origin().ascii_serialization()
                ),
            ));
        }
        let auth = match wit.auth {
            WitAuth::None => AuthScheme::None,
            WitAuth::Bearer => AuthScheme::Bearer,
            WitAuth::Header(name) => {
                let header = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid("auth", format!("`{name}` is not a header name")))?;
                // The credential may take a credential's header, not one that routes or frames
                // the request: a secret sent as `Host` would pick a virtual host the allowlist
                // never named.
                let credential_header = matches!(header.as_str(), "authorization" | "cookie");
                if crate::runtime::capability::is_forbidden_header(&header) && !credential_header {
                    return Err(invalid(
                        "auth",
                        format!("`{name}` is a header the host owns; name the API's credential header"),
                    ));
                }
                AuthScheme::Header(header)
            }
            WitAuth::Query(name) if !name.is_empty() => AuthScheme::Query(name),
            WitAuth::Query(_) => return Err(invalid("auth", "query parameter name is empty")),
            WitAuth::Basic => AuthScheme::Basic,
            WitAuth::Oauth2(o) => {
                // The gateway sets the protocol's own parameters: one repeated after them would
                // be read by a provider that takes the last value (the implicit flow, another
                // redirect, plain PKCE, a fixed state).
                if let Some((name, _)) = o
                    .authorize_params
                    .iter()
                    .find(|(name, _)| GATEWAY_AUTHORIZE_PARAMS.contains(&name.to_ascii_lowercase().as_str()))
                {
                    return Err(invalid(
                        "auth",
                        format!(
                            "authorize parameter `{}` is one the gateway sets; give scopes as `scopes`, and only \
                             provider extras (such as `access_type`, `prompt`) here",
                            name.escape_default()
                        ),
                    ));
                }
                // Checked here, not first when an end user tries to connect.
                for (field, url) in [
                    ("auth.oauth2.authorize-url", &o.authorize_url),
                    ("auth.oauth2.token-url", &o.token_url),
                ] {
                    let absolute = url::Url::parse(url)
                        .ok()
                        .filter(|parsed| matches!(parsed.scheme(), "https" | "http") && parsed.has_host());
                    if absolute.is_none() {
                        return Err(invalid(
                            field,
                            format!("`{}` is not an absolute http(s) URL", url.escape_default()),
                        ));
                    }
                }
                AuthScheme::OAuth2(OAuth2Config {
                    authorize_url: o.authorize_url,
                    token_url: o.token_url,
                    scopes: o.scopes,
                    authorize_params: o.authorize_params,
                })
            }
        };
        let mut endpoints: Vec<EndpointInfo> = Vec::with_capacity(wit.endpoints.len());
        let mut endpoint_index = HashMap::new();
        let mut patterns = 0;
        for endpoint in wit.endpoints {
            let field = format!("endpoints.{}", endpoint.name);
            if !is_identifier(&endpoint.name) {
                return Err(invalid(field, "name must be 1-64 of a-z, 0-9, `_` and `-`"));
            }
            let method = endpoint.method.to_ascii_uppercase();
            if !HTTP_METHODS.contains(&method.as_str()) {
                return Err(invalid(
                    &field,
                    format!(
                        "method `{}` is not one of {}",
                        endpoint.method,
                        HTTP_METHODS.join(", ")
                    ),
                ));
            }
            if !endpoint.path.starts_with('/') {
                return Err(invalid(
                    &field,
                    format!("path `{}` must start with `/`", endpoint.path.escape_default()),
                ));
            }
            if endpoint.path.chars().any(char::is_control) {
                return Err(invalid(&field, "path holds a control character"));
            }
            let mut params_schema: serde_json::Value = serde_json::from_str(&endpoint.params_schema)
                .map_err(|e| invalid(&field, format!("params-schema is not JSON: {e}")))?;
            let Some(schema) = params_schema.as_object_mut() else {
                return Err(invalid(&field, "params-schema must be a JSON object"));
            };
            // `params` is always an object: say so where the schema does not (`{}`), as LLM
            // APIs and MCP refuse a tool whose input schema is not an object's, and one such
            // tool fails an agent's whole tool list.
            match schema.get("type") {
                None => {
                    schema.insert("type".into(), "object".into());
                }
                Some(kind) if kind == "object" => {}
                Some(kind) => {
                    return Err(invalid(
                        &field,
                        format!("params-schema must describe an object (`params` is one), not type {kind}"),
                    ));
                }
            }
            patterns += patterns_in(&params_schema);
            if patterns > MAX_PATTERNS {
                return Err(invalid(
                    &field,
                    format!("the connector's schemas hold more than {MAX_PATTERNS} patterns"),
                ));
            }
            // Before anything validates against it (examples, below, then every call's params).
            if let Some(reason) = super::schema_cost::excessive(&params_schema) {
                return Err(invalid(&field, format!("params-schema is refused: {reason}")));
            }
            // Built without remote or file resolution: a connector's schema cannot make the
            // host fetch anything. Patterns run on the linear-time `regex` engine: a
            // backtracking one lets a schema's `pattern` take seconds per string of a caller's
            // params, on the thread serving requests (backreferences and look-around are
            // refused at load instead).
            let validator = jsonschema::options()
                .with_pattern_options(
                    jsonschema::PatternOptions::regex().size_limit(MAX_COMPILED_PATTERN_BYTES),
                )
                .build(&params_schema)
                .map_err(|e| {
                    let at = e.instance_path().to_string();
                    let at = if at.is_empty() { "/".to_owned() } else { at };
                    let value = params_schema.pointer(e.instance_path().as_str());
                    let hint = schema_error_hint(&at, &e.to_string(), value).unwrap_or_default();
                    invalid(
                        &field,
                        format!("params-schema is not a valid JSON Schema: at `{at}`: {e}{hint}"),
                    )
                })?;
            let mut examples = endpoint
                .examples
                .into_iter()
                .map(|e| {
                    serde_json::from_str(&e.params_json)
                        .map(|params| (e.title, params))
                        .map_err(|err| invalid(&field, format!("example is not JSON: {err}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Examples are published (catalog, OpenAPI, tool descriptions) for callers and
            // agents to copy: one the host would refuse would teach them a failing call. It is
            // left out, loudly, rather than refusing a connector that worked before.
            examples.retain(|(title, params)| {
                let problems: Vec<String> = validator
                    .iter_errors(params)
                    .take(MAX_REPORTED_ERRORS)
                    .map(|error| {
                        let at = error.instance_path().to_string();
                        format!("`{}`: {error}", if at.is_empty() { "/" } else { &at })
                    })
                    .collect();
                if !problems.is_empty() {
                    tracing::warn!(
                        connector = %wit.id.escape_default(),
                        endpoint = %endpoint.name.escape_default(),
                        example = %title.escape_default(),
                        problems = %problems.join("; ").escape_default(),
                        "an example its endpoint's params schema refuses is left out of the catalog"
                    );
                }
                problems.is_empty()
            });
            if endpoint_index
                .insert(endpoint.name.clone(), endpoints.len())
                .is_some()
            {
                return Err(invalid(field, "declared twice"));
            }
            let action_key = action_key(&wit.id, &endpoint.name);
            if let Some(twin) = endpoints.iter().find(|e| e.action_key == action_key) {
                return Err(invalid(
                    field,
                    format!(
                        "shares the action id `{action_key}` with endpoint `{}`",
                        twin.name
                    ),
                ));
            }
            endpoints.push(EndpointInfo {
                action_key,
                tool_name: tool_name(&wit.id, &endpoint.name),
                name: endpoint.name,
                title: endpoint.title,
                method,
                path: endpoint.path,
                description: endpoint.description,
                params_schema,
                validator: Arc::new(validator),
                examples,
            });
        }
        Ok(Self {
            id: wit.id,
            name: wit.name,
            version: wit.version,
            description: wit.description,
            category: wit.category,
            icon_url: wit.icon_url,
            base_url,
            allowed_hosts,
            auth,
            endpoints,
            endpoint_index,
        })
    }

    /// Check `params` against the endpoint's schema: each failure as (JSON pointer, reason).
    pub fn validate_params(endpoint: &EndpointInfo, params: &serde_json::Value) -> Vec<(String, String)> {
        endpoint
            .validator
            .iter_errors(params)
            .take(MAX_REPORTED_ERRORS)
            .map(|error| {
                let mut pointer = error.instance_path().to_string();
                // A missing property is pointed at where it should be, not at its parent: the
                // field a caller (or an LLM) has to fill in.
                if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind()
                    && let Some(name) = property.as_str()
                {
                    pointer.push('/');
                    pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
                }
                if pointer.is_empty() {
                    pointer.push('/');
                }
                (pointer, params_error_message(&error))
            })
            .collect()
    }

    /// Write numbers with a zero fraction (`7.0`) as integers (`7`); whether any was. JSON
    /// Schema counts `7.0` as an integer, so [`Self::validate_params`] lets it through, but
    /// connectors in typed languages read an integer field strictly and would refuse it (a
    /// client serialising a float it meant as a whole number sends exactly this).
    pub fn integral_numbers_as_integers(params: &mut serde_json::Value) -> bool {
        match params {
            serde_json::Value::Number(number) => {
                let Some(float) = number.as_f64().filter(|_| number.is_f64()) else {
                    return false;
                };
                // Within ±2^53 every whole float is exact as an integer.
                if float.fract() != 0.0 || float.abs() > 9_007_199_254_740_992.0 {
                    return false;
                }
                *number = serde_json::Number::from(float as i64);
                true
            }
            serde_json::Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
                Self::integral_numbers_as_integers(item) | changed
            }),
            serde_json::Value::Object(fields) => fields.values_mut().fold(false, |changed, field| {
                Self::integral_numbers_as_integers(field) | changed
            }),
            _ => false,
        }
    }

    /// The endpoint called `name`.
    pub fn endpoint(&self, name: &str) -> Option<&EndpointInfo> {
        self.endpoint_index.get(name).map(|&i| &self.endpoints[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::{WitEndpoint, WitManifest};

    /// The connector authors' guide states the loader's rules with this code's numbers and
    /// names (docs/connectors/README.md, "What the gateway checks when it loads a connector").
    #[test]
    fn the_authors_guide_states_the_loaders_limits() {
        let guide = include_str!("../../../docs/connectors/README.md");
        let section = guide
            .split("## What the gateway checks when it loads a connector")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("the guide has the section");
        let thousands = |n: usize| {
            let digits = n.to_string();
            match digits.len() > 3 {
                true => format!("{},{}", &digits[..digits.len() - 3], &digits[digits.len() - 3..]),
                false => digits,
            }
        };
        let mut stated: Vec<String> = vec![
            format!("at most {} bytes", MAX_NAME_BYTES),
            format!("at most {} KiB", MAX_DESCRIPTION_BYTES >> 10),
            format!("at most {} MiB", MAX_DESCRIBED_BYTES >> 20),
            format!("at most {},", thousands(MAX_ENDPOINTS)),
            format!("at most {} regular", MAX_PATTERNS),
        ];
        stated.extend(RESERVED_IDS.iter().map(|id| format!("`{id}`")));
        stated.extend(HTTP_METHODS.iter().map(|method| format!("`{method}`")));
        stated.extend(GATEWAY_AUTHORIZE_PARAMS.iter().map(|param| format!("`{param}`")));
        let missing: Vec<&String> = stated
            .iter()
            .filter(|text| !section.contains(text.as_str()))
            .collect();
        assert!(missing.is_empty(), "the guide does not say {missing:?}");
    }

    #[test]
    fn whole_numbers_written_as_floats_become_integers_and_nothing_else_changes() {
        let mut params = serde_json::json!({
            "page": 7.0, "nested": [{"n": -2.0}, 1.5, "7.0"], "big": 1e300, "exact": 3
        });
        assert!(Manifest::integral_numbers_as_integers(&mut params));
        assert_eq!(
            params.to_string(),
            r#"{"big":1e+300,"exact":3,"nested":[{"n":-2},1.5,"7.0"],"page":7}"#
        );
        let mut untouched = serde_json::json!({"page": 7, "ratio": 0.5, "name": "x"});
        assert!(!Manifest::integral_numbers_as_integers(&mut untouched));
    }

    fn wit(schema: &str) -> WitManifest {
        WitManifest {
            id: "t".into(),
            name: "T".into(),
            version: "1.0.0".into(),
            description: String::new(),
            category: "test".into(),
            icon_url: None,
            base_url: "https://api.example.com".into(),
            allowed_hosts: vec!["https://api.example.com".into()],
            auth: WitAuth::Bearer,
            endpoints: vec![WitEndpoint {
                name: "get".into(),
                title: "Get".into(),
                method: "GET".into(),
                path: "/".into(),
                description: String::new(),
                params_schema: schema.into(),
                examples: Vec::new(),
            }],
        }
    }

    #[test]
    fn a_missing_or_relative_base_url_says_what_to_give() {
        for (base_url, says) in [
            ("", "empty: the manifest must set one"),
            ("api.example.com", "`api.example.com` is not an absolute URL"),
        ] {
            let manifest = WitManifest {
                base_url: base_url.into(),
                ..wit("{}")
            };
            let error = Manifest::from_wit(manifest)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.contains(says) && error.contains("https://api.example.com"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_credential_is_never_sent_over_plain_http() -> Result<(), ManifestError> {
        let with = |base_url: &str, hosts: &[&str], auth: WitAuth| WitManifest {
            base_url: base_url.into(),
            allowed_hosts: hosts.iter().map(|host| host.to_string()).collect(),
            auth,
            ..wit("{}")
        };
        let refused_field = |manifest: WitManifest| match Manifest::from_wit(manifest)
            .and_then(|manifest| manifest.check_credentials_travel_encrypted())
        {
            Err(ManifestError::Invalid { field, reason }) => {
                assert!(reason.contains("in the clear"), "{reason}");
                Some(field)
            }
            Ok(()) => None,
        };
        let plain = "http://api.example.com";
        assert_eq!(
            refused_field(with(plain, &[plain], WitAuth::Bearer)).as_deref(),
            Some("base-url")
        );
        assert_eq!(
            refused_field(with(
                "https://api.example.com",
                &["https://api.example.com", "http://files.example.com"],
                WitAuth::Basic
            ))
            .as_deref(),
            Some("allowed-hosts")
        );
        let oauth = |token_url: &str| {
            WitAuth::Oauth2(super::super::bindings::Oauth2Config {
                authorize_url: "https://accounts.example.com/o/authorize".into(),
                token_url: token_url.into(),
                scopes: Vec::new(),
                authorize_params: Vec::new(),
            })
        };
        let https = "https://api.example.com";
        assert_eq!(
            refused_field(with(https, &[https], oauth("HTTP://accounts.example.com/token"))).as_deref(),
            Some("auth.oauth2.token-url")
        );
        assert_eq!(
            refused_field(with(https, &[https], oauth("https://accounts.example.com/token"))),
            None
        );
        assert_eq!(
            refused_field(with(plain, &[plain], WitAuth::None)),
            None,
            "no credential to leak"
        );
        Ok(())
    }

    #[test]
    fn params_errors_say_what_alternatives_need_without_quoting_the_params() -> Result<(), ManifestError> {
        let manifest = Manifest::from_wit(wit(
            r#"{"type":"object","properties":{"body":{"type":"string","maxLength":10}},"anyOf":[{"required":["text"]},{"required":["html"]}]}"#,
        ))?;
        let endpoint = manifest.endpoint("get").expect("endpoint");
        let secret_body = "confidential ".repeat(1000);
        let errors = Manifest::validate_params(endpoint, &serde_json::json!({"body": secret_body}));
        let alternatives = errors
            .iter()
            .find(|(pointer, _)| pointer == "/")
            .expect("the anyOf error");
        assert!(
            alternatives.1.contains("none of the alternatives `anyOf` allows")
                && alternatives.1.contains("\"text\" is a required property")
                && alternatives.1.contains("\"html\" is a required property"),
            "{alternatives:?}"
        );
        assert!(!alternatives.1.contains("confidential"), "{alternatives:?}");
        // Other messages quote the value, as the library words them, but only so much of it.
        let too_long = errors
            .iter()
            .find(|(pointer, _)| pointer == "/body")
            .expect("the maxLength error");
        assert!(
            too_long.1.len() <= MAX_PARAMS_ERROR_BYTES + '…'.len_utf8(),
            "{too_long:?}"
        );
        assert!(too_long.1.ends_with('…'), "{too_long:?}");
        Ok(())
    }

    #[test]
    fn published_text_is_plain_and_bounded() {
        let refused = |manifest: WitManifest| match Manifest::from_wit(manifest) {
            Err(ManifestError::Invalid { field, .. }) => field,
            Ok(_) => String::new(),
        };
        let named = |name: &str| WitManifest {
            name: name.into(),
            ..wit("{}")
        };
        assert_eq!(refused(named("GitHub\u{202E}buHtiG")), "name");
        assert_eq!(refused(named("two\nlines")), "name");
        assert_eq!(refused(named(&"n".repeat(MAX_NAME_BYTES + 1))), "name");
        assert_eq!(refused(named("GitHub (Enterprise)")), "");
        let described = |description: &str| WitManifest {
            description: description.into(),
            ..wit("{}")
        };
        assert_eq!(
            refused(described("First paragraph.\n\nSecond.")),
            "",
            "line breaks are fine here"
        );
        assert_eq!(refused(described("\u{1b}[31mred")), "description");
        let mut titled = wit("{}");
        titled.endpoints[0].title = "Get\0it".into();
        assert_eq!(refused(titled), "endpoints.get.title");
        for (icon, field) in [
            ("javascript:alert(1)", "icon-url"),
            ("https://cdn.example.com/i.svg", ""),
        ] {
            let manifest = WitManifest {
                icon_url: Some(icon.into()),
                ..wit("{}")
            };
            assert_eq!(refused(manifest), field, "{icon}");
        }
    }

    #[test]
    fn a_connector_adds_only_provider_extras_to_the_sign_in() {
        let with_params = |params: &[(&str, &str)]| WitManifest {
            auth: WitAuth::Oauth2(super::super::bindings::Oauth2Config {
                authorize_url: "https://accounts.example.com/o/authorize".into(),
                token_url: "https://accounts.example.com/token".into(),
                scopes: vec!["read".into()],
                authorize_params: params.iter().map(|(n, v)| ((*n).into(), (*v).into())).collect(),
            }),
            ..wit("{}")
        };
        assert!(
            Manifest::from_wit(with_params(&[("access_type", "offline"), ("prompt", "consent")])).is_ok()
        );
        for name in [
            "redirect_uri",
            "State",
            "response_type",
            "code_challenge_method",
            "client_id",
            "scope",
        ] {
            match Manifest::from_wit(with_params(&[(name, "x")])) {
                Err(ManifestError::Invalid { field, reason }) => {
                    assert_eq!(field, "auth");
                    assert!(reason.contains("the gateway sets"), "{reason}");
                }
                Ok(_) => panic!("`{name}` is the gateway's to set"),
            }
        }
    }

    #[test]
    fn a_schema_costly_to_validate_against_is_refused() {
        let mut defs = serde_json::Map::new();
        defs.insert("l0".into(), serde_json::json!({}));
        for level in 1..=24 {
            let next = format!("#/$defs/l{}", level - 1);
            defs.insert(
                format!("l{level}"),
                serde_json::json!({"allOf": [{"$ref": next}, {"$ref": next}, {"$ref": next}]}),
            );
        }
        let bomb = serde_json::json!({"$defs": defs, "$ref": "#/$defs/l24"});
        match Manifest::from_wit(wit(&bomb.to_string())) {
            Err(ManifestError::Invalid { reason, .. }) => {
                assert!(reason.contains("params-schema is refused"), "{reason}")
            }
            Ok(_) => panic!("refused before any example or call is validated against it"),
        }
    }

    #[test]
    fn params_are_checked_against_the_compiled_schema() -> Result<(), ManifestError> {
        let manifest = Manifest::from_wit(wit(
            r#"{"type":"object","required":["owner"],"properties":{"owner":{"type":"string"},"n":{"type":"integer","minimum":1}}}"#,
        ))?;
        let endpoint = manifest.endpoint("get").expect("endpoint");
        assert!(Manifest::validate_params(endpoint, &serde_json::json!({"owner": "a", "n": 2})).is_empty());
        let errors = Manifest::validate_params(endpoint, &serde_json::json!({"n": 0}));
        let pointers: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert!(
            pointers.contains(&"/owner") && pointers.contains(&"/n"),
            "{errors:?}"
        );
        assert!(errors.iter().any(|(_, m)| m.contains("owner")), "{errors:?}");
        Ok(())
    }

    #[test]
    fn tool_names_fit_llm_apis_and_stay_distinct() {
        assert_eq!(tool_name("github", "create_issue"), "github__create_issue");
        let exactly = "e".repeat(MAX_TOOL_NAME - "github__".len());
        assert_eq!(tool_name("github", &exactly), format!("github__{exactly}"));
        let long = "a".repeat(64);
        let (first, second) = (
            tool_name(&long, &long),
            tool_name(&long, &format!("{}b", &long[1..])),
        );
        for name in [&first, &second] {
            assert_eq!(name.len(), MAX_TOOL_NAME, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            );
        }
        assert_ne!(first, second, "names sharing their first 39 characters differ");
        assert_eq!(
            first,
            tool_name(&long, &long),
            "the same action always gets the same name"
        );
        assert_eq!(action_key("github", "create_issue"), "github-create-issue");
    }

    #[test]
    fn schema_errors_in_the_libraries_words_say_what_to_do() {
        let error = |schema: serde_json::Value| {
            Manifest::from_wit(wit(&schema.to_string()))
                .expect_err("invalid")
                .to_string()
        };
        let misspelt = error(serde_json::json!({"properties": {"a": {"type": "strng"}}}));
        assert!(
            misspelt.contains("at `/properties/a/type`") && misspelt.contains("`type` is one of"),
            "{misspelt}"
        );
        let huge = error(
            serde_json::json!({"properties": {"a": {"type": "string", "pattern": "^(\\w+\\s?){1,500}$"}}}),
        );
        assert!(
            huge.contains("more than 256 KiB") && !huge.contains("backreferences"),
            "{huge}"
        );
        let lookaround =
            error(serde_json::json!({"properties": {"a": {"type": "string", "pattern": "^(?=a)"}}}));
        assert!(
            lookaround.contains("backreferences and look-around"),
            "{lookaround}"
        );
        let remote =
            error(serde_json::json!({"properties": {"a": {"$ref": "https://schemas.example.com/a.json"}}}));
        assert!(
            remote.contains("never fetched: put the schema under `$defs`"),
            "{remote}"
        );
        let backreference =
            error(serde_json::json!({"properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}));
        assert!(
            backreference.contains("backreferences and look-around are not supported"),
            "{backreference}"
        );
    }

    #[test]
    fn openapis_nullable_is_found_where_a_schema_says_it() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "done": {"type": "boolean", "nullable": true},
                "nullable": {"type": "string"},
                "tags": {"type": "array", "items": {"anyOf": [{"type": "string", "nullable": true}]}}
            },
            "default": {"nullable": true},
            "enum": [{"nullable": false}]
        });
        assert_eq!(
            nullable_keywords(&schema),
            [
                "/properties/done/nullable",
                "/properties/tags/items/anyOf/0/nullable"
            ]
        );
        assert!(nullable_keywords(&serde_json::json!({"type": "object"})).is_empty());
    }

    #[test]
    fn invalid_schemas_and_manifests_are_load_errors() {
        assert!(
            Manifest::from_wit(wit(r#"{"type": 5}"#)).is_err(),
            "not a valid schema"
        );
        assert!(Manifest::from_wit(wit("[1]")).is_err(), "not an object");
        assert!(
            Manifest::from_wit(wit(r#"{"type": "string"}"#)).is_err(),
            "params are an object"
        );
        let loose = Manifest::from_wit(wit("{}")).expect("an empty schema");
        assert_eq!(
            loose.endpoints[0].params_schema,
            serde_json::json!({"type": "object"})
        );
        let mut fetch = wit("{}");
        fetch.endpoints[0].method = "FETCH".into();
        assert!(Manifest::from_wit(fetch).is_err(), "not an HTTP method");
        let mut relative = wit("{}");
        relative.endpoints[0].path = "x".into();
        assert!(Manifest::from_wit(relative).is_err(), "a path starts with /");
        let mut broken_path = wit("{}");
        broken_path.endpoints[0].path = "/a\nb".into();
        assert!(Manifest::from_wit(broken_path).is_err(), "a control character");
        let mut crowded = wit("{}");
        crowded.endpoints = (0..=MAX_ENDPOINTS)
            .map(|i| WitEndpoint {
                name: format!("e{i}"),
                ..crowded.endpoints[0].clone()
            })
            .collect();
        let error = Manifest::from_wit(crowded).expect_err("too many").to_string();
        assert!(error.contains("at most 1000"), "{error}");
        for (authorize_url, token_url) in [
            ("https://accounts.example.com/auth", "oauth2.example.com/token"),
            ("/authorize", "https://oauth2.example.com/token"),
        ] {
            let mut schemeless = wit("{}");
            schemeless.auth = WitAuth::Oauth2(super::super::bindings::Oauth2Config {
                authorize_url: authorize_url.into(),
                token_url: token_url.into(),
                scopes: Vec::new(),
                authorize_params: Vec::new(),
            });
            let error = Manifest::from_wit(schemeless).expect_err(token_url).to_string();
            assert!(error.contains("is not an absolute http(s) URL"), "{error}");
        }
        assert!(Manifest::from_wit(wit("{")).is_err(), "not JSON");
        for owned in ["host", "Content-Length", "transfer-encoding", "x-forwarded-for"] {
            let mut as_routing = wit("{}");
            as_routing.auth = WitAuth::Header(owned.into());
            let error = Manifest::from_wit(as_routing).expect_err(owned).to_string();
            assert!(error.contains("a header the host owns"), "{error}");
        }
        let mut as_key = wit("{}");
        as_key.auth = WitAuth::Header("x-api-key".into());
        assert!(Manifest::from_wit(as_key).is_ok());
        let many = serde_json::json!({"properties": {
            "a": {"type": "string", "pattern": "^a$"},
            "b": {"patternProperties": (0..300).map(|i| (format!("^k{i}$"), serde_json::json!({}))).collect::<serde_json::Map<_, _>>()}
        }});
        let error = Manifest::from_wit(wit(&many.to_string()))
            .expect_err("301 patterns")
            .to_string();
        assert!(error.contains("more than 256 patterns"), "{error}");
        let mut huge = wit("{}");
        huge.endpoints[0].params_schema = format!(r#"{{"description": "{}"}}"#, "x".repeat(3 << 20));
        let error = Manifest::from_wit(huge).expect_err("3 MiB of schema").to_string();
        assert!(error.contains("at most 2048 KiB"), "{error}");
        let mut bad_id = wit("{}");
        bad_id.id = "Bad Id".into();
        assert!(Manifest::from_wit(bad_id).is_err());
        for version in ["", "1.0", "v1.2.3", "latest"] {
            let mut unversioned = wit("{}");
            unversioned.version = version.into();
            let error = Manifest::from_wit(unversioned).expect_err(version).to_string();
            assert!(error.contains("is not a semantic version"), "{error}");
        }
        let mut prerelease = wit("{}");
        prerelease.version = "2.0.0-beta.1+build.5".into();
        assert!(Manifest::from_wit(prerelease).is_ok());
        for reserved in RESERVED_IDS {
            let mut taken = wit("{}");
            taken.id = (*reserved).into();
            let error = Manifest::from_wit(taken).expect_err(reserved).to_string();
            assert!(error.contains("gateway's own routes"), "{error}");
        }
        // A pattern that would backtrack (a backreference) is refused at load; others work.
        let error = Manifest::from_wit(wit(
            r#"{"properties": {"a": {"type": "array", "items": {"anyOf": [{"pattern": "^(a|a)*\\1$"}, {"type": "string"}]}}}}"#,
        ))
        .expect_err("a backreference")
        .to_string();
        assert!(error.contains("not a valid JSON Schema"), "{error}");
        let patterned = Manifest::from_wit(wit(
            r#"{"properties": {"a": {"type": "string", "pattern": "^[a-z]+-[0-9]{2,}$"}}}"#,
        ))
        .expect("a linear pattern loads");
        let endpoint = &patterned.endpoints[0];
        assert!(Manifest::validate_params(endpoint, &serde_json::json!({"a": "ab-12"})).is_empty());
        assert!(!Manifest::validate_params(endpoint, &serde_json::json!({"a": "AB-1"})).is_empty());
        // A schema mistake says where it is.
        let error = Manifest::from_wit(wit(r#"{"properties": {"a": {"type": "strin"}}}"#))
            .expect_err("an unknown type")
            .to_string();
        assert!(error.contains("at `/properties/a/type`"), "{error}");
        // Examples are published for callers to copy: one the host would refuse is refused.
        let example =
            |params: &str| crate::runtime::bindings::v0_2::exports::sluice::connector::connector::Example {
                title: "Item 42".into(),
                params_json: params.into(),
            };
        let mut wrong_example = wit(r#"{"properties": {"id": {"type": "string"}}, "required": ["id"]}"#);
        wrong_example.endpoints[0].examples = vec![example(r#"{"id": "42"}"#), example(r#"{"id": 42}"#)];
        wrong_example.endpoints[0].examples[1].title = "Item 43".into();
        let loaded = Manifest::from_wit(wrong_example).expect("loads, without the refused example");
        let titles: Vec<&str> = loaded.endpoints[0]
            .examples
            .iter()
            .map(|(title, _)| title.as_str())
            .collect();
        assert_eq!(titles, ["Item 42"]);
        let mut doubled = wit("{}");
        doubled.id = "my__app".into();
        let error = Manifest::from_wit(doubled)
            .expect_err("`__` in an id")
            .to_string();
        assert!(error.contains("`__`"), "{error}");
        // `crm_`'s `list` and `crm`'s `_list` would be one tool, `crm___list`.
        let mut trailing = wit("{}");
        trailing.id = "crm_".into();
        let error = Manifest::from_wit(trailing)
            .expect_err("an id ending in `_`")
            .to_string();
        assert!(error.contains("must not end with `_`"), "{error}");
        let mut twins = wit("{}");
        let mut kebab = twins.endpoints[0].clone();
        (twins.endpoints[0].name, kebab.name) = ("get_all".into(), "get-all".into());
        twins.endpoints.push(kebab);
        let error = Manifest::from_wit(twins)
            .expect_err("two endpoints, one action id")
            .to_string();
        assert!(error.contains("action id `t-get-all`"), "{error}");
        let mut off_origin = wit("{}");
        off_origin.allowed_hosts = vec!["https://other.example.com".into()];
        assert!(
            Manifest::from_wit(off_origin).is_err(),
            "base URL must be allowed"
        );
    }
}
