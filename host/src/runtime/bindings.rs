//! The only `bindgen!` calls in the host: one module per supported version of the WIT contract
//! (`wit/since_vX.Y.Z/`). The newest is what the host works with; components built against an
//! older contract are bound with that version's bindings and their values converted to the
//! newest types, so old connector binaries keep working.

/// `sluice:connector@0.2.0` — the newest contract.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.2.0",
        world: "connector-world",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// `sluice:connector@0.1.0` — the first contract; 0.2.0 added `manifest.icon-url`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "connector-world",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use self::v0_2::exports::sluice::connector::connector::{
    AuthScheme, ConnectorError, Endpoint as WitEndpoint, Manifest as WitManifest, Oauth2Config, Output,
};
pub use self::v0_2::sluice::connector::types::{Header, HttpError, Level, Request, Response};

/// Conversions between the 0.1 and the newest types. Every type is unchanged but for the
/// manifest's new field, so these are field-for-field moves.
pub mod upgrade {
    use super::{v0_1, v0_2};
    use v0_1::exports::sluice::connector::connector as old_connector;
    use v0_1::sluice::connector::types as old;
    use v0_2::exports::sluice::connector::connector as new_connector;
    use v0_2::sluice::connector::types as new;

    /// A 0.1 request as the newest type.
    pub fn request(r: old::Request) -> new::Request {
        new::Request {
            method: r.method,
            url: r.url,
            headers: r.headers.into_iter().map(header).collect(),
            body: r.body,
        }
    }

    fn header(h: old::Header) -> new::Header {
        new::Header {
            name: h.name,
            value: h.value,
        }
    }

    /// A newest response for a 0.1 guest.
    pub fn response(r: new::Response) -> old::Response {
        old::Response {
            status: r.status,
            headers: r
                .headers
                .into_iter()
                .map(|h| old::Header {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            body: r.body,
        }
    }

    /// A newest HTTP error for a 0.1 guest.
    pub fn http_error_down(e: new::HttpError) -> old::HttpError {
        match e {
            new::HttpError::Denied(m) => old::HttpError::Denied(m),
            new::HttpError::Timeout(m) => old::HttpError::Timeout(m),
            new::HttpError::TooLarge(m) => old::HttpError::TooLarge(m),
            new::HttpError::Invalid(m) => old::HttpError::Invalid(m),
            new::HttpError::Transport(m) => old::HttpError::Transport(m),
            new::HttpError::Other(m) => old::HttpError::Other(m),
        }
    }

    fn http_error_up(e: old::HttpError) -> new::HttpError {
        match e {
            old::HttpError::Denied(m) => new::HttpError::Denied(m),
            old::HttpError::Timeout(m) => new::HttpError::Timeout(m),
            old::HttpError::TooLarge(m) => new::HttpError::TooLarge(m),
            old::HttpError::Invalid(m) => new::HttpError::Invalid(m),
            old::HttpError::Transport(m) => new::HttpError::Transport(m),
            old::HttpError::Other(m) => new::HttpError::Other(m),
        }
    }

    /// A 0.1 log level as the newest type.
    pub fn level(l: old::Level) -> new::Level {
        match l {
            old::Level::Trace => new::Level::Trace,
            old::Level::Debug => new::Level::Debug,
            old::Level::Info => new::Level::Info,
            old::Level::Warn => new::Level::Warn,
            old::Level::Error => new::Level::Error,
        }
    }

    /// A 0.1 manifest as the newest type (no icon).
    pub fn manifest(m: old_connector::Manifest) -> new_connector::Manifest {
        new_connector::Manifest {
            id: m.id,
            name: m.name,
            version: m.version,
            description: m.description,
            category: m.category,
            icon_url: None,
            base_url: m.base_url,
            allowed_hosts: m.allowed_hosts,
            auth: match m.auth {
                old_connector::AuthScheme::None => new_connector::AuthScheme::None,
                old_connector::AuthScheme::Bearer => new_connector::AuthScheme::Bearer,
                old_connector::AuthScheme::Header(n) => new_connector::AuthScheme::Header(n),
                old_connector::AuthScheme::Query(n) => new_connector::AuthScheme::Query(n),
                old_connector::AuthScheme::Basic => new_connector::AuthScheme::Basic,
                old_connector::AuthScheme::Oauth2(o) => {
                    new_connector::AuthScheme::Oauth2(new_connector::Oauth2Config {
                        authorize_url: o.authorize_url,
                        token_url: o.token_url,
                        scopes: o.scopes,
                        authorize_params: o.authorize_params,
                    })
                }
            },
            endpoints: m
                .endpoints
                .into_iter()
                .map(|e| new_connector::Endpoint {
                    name: e.name,
                    title: e.title,
                    method: e.method,
                    path: e.path,
                    description: e.description,
                    params_schema: e.params_schema,
                    examples: e
                        .examples
                        .into_iter()
                        .map(|x| new_connector::Example {
                            title: x.title,
                            params_json: x.params_json,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// A 0.1 action output as the newest type.
    pub fn output(o: old_connector::Output) -> new_connector::Output {
        new_connector::Output {
            status: o.status,
            content_type: o.content_type,
            body: o.body,
        }
    }

    /// A 0.1 connector error as the newest type.
    pub fn connector_error(e: old_connector::ConnectorError) -> new_connector::ConnectorError {
        match e {
            old_connector::ConnectorError::BadParams(m) => new_connector::ConnectorError::BadParams(m),
            old_connector::ConnectorError::UnknownEndpoint(m) => {
                new_connector::ConnectorError::UnknownEndpoint(m)
            }
            old_connector::ConnectorError::Http(h) => new_connector::ConnectorError::Http(http_error_up(h)),
            old_connector::ConnectorError::Upstream(m) => new_connector::ConnectorError::Upstream(m),
            old_connector::ConnectorError::Other(m) => new_connector::ConnectorError::Other(m),
        }
    }
}
