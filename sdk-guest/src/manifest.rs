//! The connector's self-description, built with a small builder and read once by the gateway.

use crate::bindings::exports::sluice::connector::connector as wit;
use serde_json::Value;

/// How the gateway authenticates upstream requests for this connector's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credential.
    None,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// The secret in the named header, e.g. `x-api-key`.
    Header(String),
    /// The secret in the named query parameter, e.g. `api_key`.
    Query(String),
    /// `Authorization: Basic …` from a `user:password` secret.
    Basic,
    /// OAuth 2.0 authorization code flow; the access token is sent as a bearer token.
    OAuth2(OAuth2),
}

/// Where and how the gateway obtains OAuth 2.0 tokens for this connector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OAuth2 {
    /// The provider's authorization endpoint.
    pub authorize_url: String,
    /// The provider's token endpoint.
    pub token_url: String,
    /// Scopes requested by default.
    pub scopes: Vec<String>,
    /// Extra authorize-URL parameters, e.g. `("access_type", "offline")`.
    pub authorize_params: Vec<(String, String)>,
}

/// One action callers can run, with the JSON Schema of its params.
#[derive(Debug, Clone)]
pub struct Endpoint {
    name: String,
    title: String,
    method: String,
    path: String,
    description: String,
    params_schema: Value,
    examples: Vec<(String, Value)>,
}

impl Endpoint {
    /// An endpoint called `name` (used in `/v1/{connector}/{name}`) that sends `method` to
    /// the upstream `path` template (e.g. `/repos/{owner}/{repo}`). Params default to any object.
    pub fn new(name: &str, method: &str, path: &str) -> Self {
        Self {
            name: name.to_owned(),
            title: name.replace('_', " "),
            method: method.to_owned(),
            path: path.to_owned(),
            description: String::new(),
            params_schema: serde_json::json!({"type": "object"}),
            examples: Vec::new(),
        }
    }

    /// Human title, e.g. `Create an issue`.
    pub fn title(mut self, title: &str) -> Self {
        self.title = title.to_owned();
        self
    }

    /// What the endpoint does.
    pub fn description(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }

    /// JSON Schema of the `params` object.
    pub fn params_schema(mut self, schema: Value) -> Self {
        self.params_schema = schema;
        self
    }

    /// A worked example of params.
    pub fn example(mut self, title: &str, params: Value) -> Self {
        self.examples.push((title.to_owned(), params));
        self
    }

    fn into_wit(self) -> wit::Endpoint {
        wit::Endpoint {
            name: self.name,
            title: self.title,
            method: self.method,
            path: self.path,
            description: self.description,
            params_schema: self.params_schema.to_string(),
            examples: self
                .examples
                .into_iter()
                .map(|(title, params)| wit::Example {
                    title,
                    params_json: params.to_string(),
                })
                .collect(),
        }
    }
}

/// Everything the gateway needs to know about a connector.
#[derive(Debug, Clone)]
pub struct Manifest {
    id: String,
    name: String,
    version: String,
    description: String,
    category: String,
    icon_url: Option<String>,
    base_url: String,
    allowed_hosts: Vec<String>,
    auth: Auth,
    endpoints: Vec<Endpoint>,
}

impl Manifest {
    /// The connector's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The endpoints' names, in order.
    pub(crate) fn endpoint_names(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().map(|endpoint| endpoint.name.as_str())
    }

    /// Each endpoint's examples: (endpoint name, example title, params).
    pub(crate) fn examples(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.endpoints.iter().flat_map(|endpoint| {
            endpoint
                .examples
                .iter()
                .map(|(title, params)| (endpoint.name.as_str(), title.as_str(), params))
        })
    }

    /// A manifest for connector `id` (lower case, used in URLs), display `name` and `version`
    /// (pass `env!("CARGO_PKG_VERSION")`).
    pub fn new(id: &str, name: &str, version: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            description: String::new(),
            category: "other".to_owned(),
            icon_url: None,
            base_url: String::new(),
            allowed_hosts: Vec::new(),
            auth: Auth::None,
            endpoints: Vec::new(),
        }
    }

    /// What the connector talks to.
    pub fn description(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }

    /// Catalog category, e.g. `developer-tools`.
    pub fn category(mut self, category: &str) -> Self {
        self.category = category.to_owned();
        self
    }

    /// URL of an icon for catalogs.
    pub fn icon_url(mut self, url: &str) -> Self {
        self.icon_url = Some(url.to_owned());
        self
    }

    /// Default upstream base URL. Its origin is allowed automatically.
    pub fn base_url(mut self, base_url: &str) -> Self {
        self.base_url = base_url.trim_end_matches('/').to_owned();
        self
    }

    /// Allow requests to another origin, e.g. `https://uploads.github.com` or
    /// `https://*.example.com`.
    pub fn allow_host(mut self, origin: &str) -> Self {
        self.allowed_hosts.push(origin.to_owned());
        self
    }

    /// How upstream requests are authenticated.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Add an action.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    pub(crate) fn into_wit(self) -> wit::Manifest {
        let mut allowed_hosts = self.allowed_hosts;
        if let Some(origin) = origin_of(&self.base_url)
            && !allowed_hosts.iter().any(|h| h == origin)
        {
            allowed_hosts.insert(0, origin.to_owned());
        }
        wit::Manifest {
            id: self.id,
            name: self.name,
            version: self.version,
            description: self.description,
            category: self.category,
            icon_url: self.icon_url,
            base_url: self.base_url,
            allowed_hosts,
            auth: match self.auth {
                Auth::None => wit::AuthScheme::None,
                Auth::Bearer => wit::AuthScheme::Bearer,
                Auth::Header(name) => wit::AuthScheme::Header(name),
                Auth::Query(name) => wit::AuthScheme::Query(name),
                Auth::Basic => wit::AuthScheme::Basic,
                Auth::OAuth2(o) => wit::AuthScheme::Oauth2(wit::Oauth2Config {
                    authorize_url: o.authorize_url,
                    token_url: o.token_url,
                    scopes: o.scopes,
                    authorize_params: o.authorize_params,
                }),
            },
            endpoints: self.endpoints.into_iter().map(Endpoint::into_wit).collect(),
        }
    }
}

/// `scheme://host[:port]` of `url`, or `None` when it has no scheme.
fn origin_of(url: &str) -> Option<&str> {
    let after_scheme = url.find("://")? + 3;
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    Some(&url[..end])
}

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn origin_drops_path() {
        assert_eq!(
            origin_of("https://api.github.com/v3"),
            Some("https://api.github.com")
        );
        assert_eq!(origin_of("http://127.0.0.1:9000"), Some("http://127.0.0.1:9000"));
        assert_eq!(origin_of("/relative"), None);
    }
}
