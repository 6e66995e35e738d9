//! Query and header parameters of the documented routes. Each [`Kind`] is one way
//! [`Query`](crate::http::query::Query) reads a value, so a parameter is described the way its
//! route parses it; pagination is shared as `components/parameters`.

use crate::http::query::{DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE};
use crate::vault::checks::IDENTITY_TYPES;
use serde_json::{Map, Value, json};

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The query string.
    Query,
    /// A request header.
    Header,
}

/// How the route reads the value. Whatever the kind, a parameter given empty (`?limit=`)
/// counts as absent and one given twice is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// A comma-separated list.
    List,
    /// A comma-separated list of connection ids (`conn_…`).
    ConnectionIds,
    /// `true` or `false` (`1` and `0` are read as the same).
    Boolean,
    /// An HTTP status (`404`) or a class of them (`5xx`).
    StatusOrClass,
    /// One of fixed values.
    OneOf {
        /// The values.
        values: &'static [&'static str],
        /// What absence means.
        default: Option<&'static str>,
    },
    /// A point in time: RFC 3339 in UTC, or Unix milliseconds.
    Time,
    /// An integer within `min..=max`.
    Integer {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
        /// What absence means.
        default: Option<i64>,
    },
}

/// One documented parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// Query or header.
    pub place: Place,
    /// How it is read.
    pub kind: Kind,
    /// One line.
    pub description: &'static str,
}

const fn query(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        place: Place::Query,
        kind,
        description,
    }
}

const fn text(name: &'static str, description: &'static str) -> Param {
    query(name, Kind::Text, description)
}

const LIMIT: Param = query(
    "limit",
    Kind::Integer {
        min: 1,
        max: MAX_LIMIT as i64,
        default: Some(DEFAULT_LIMIT as i64),
    },
    "Rows per page",
);

const PAGE: Param = query(
    "page",
    Kind::Integer {
        min: 1,
        max: MAX_PAGE as i64,
        default: Some(1),
    },
    "Page number, from 1",
);

/// Parameters every paginated list shares, in `components/parameters`.
const SHARED: &[Param] = &[LIMIT, PAGE];

/// `GET /v1/vault/connections`.
pub const CONNECTION_FILTERS: &[Param] = &[
    text("identity", "Connections of this identity"),
    query(
        "identityType",
        Kind::OneOf {
            values: IDENTITY_TYPES,
            default: None,
        },
        "Connections of identities of this kind",
    ),
    query("platform", Kind::List, "Connections of one of these integrations"),
    query("key", Kind::List, "Connections with one of these keys"),
    query(
        "active",
        Kind::OneOf {
            values: &["true", "false", "any"],
            default: Some("true"),
        },
        "Active connections, inactive ones, or both (`any`)",
    ),
    query("tags", Kind::List, "Connections carrying every one of these tags"),
    query(
        "_id",
        Kind::ConnectionIds,
        "Connections with one of these ids (`conn_…`), as Pica's API names it",
    ),
    text("name", "Connections with this name"),
    query(
        "state",
        Kind::OneOf {
            values: CONNECTION_STATES,
            default: None,
        },
        "Connections in this health state (`failed`: the upstream refused the credential; the user must connect again)",
    ),
    LIMIT,
    PAGE,
];

/// The health states a connection can be in, as its `state` shows.
pub const CONNECTION_STATES: &[&str] = &["operational", "degraded", "failed"];

/// `GET /v1/available-connectors`.
pub const CONNECTOR_FILTERS: &[Param] = &[
    query("platform", Kind::List, "Connectors with one of these ids"),
    query(
        "key",
        Kind::List,
        "Connectors with one of these ids (Pica's name for it)",
    ),
    text("name", "Connectors whose name contains this, ignoring case"),
    query(
        "category",
        Kind::List,
        "Connectors of one of these categories, ignoring case",
    ),
    query(
        "oauth",
        Kind::Boolean,
        "Connectors that do (or do not) use OAuth 2.0",
    ),
    query(
        "authkit",
        Kind::Boolean,
        "The same as `oauth` (Pica's name), when `oauth` is absent",
    ),
    LIMIT,
    PAGE,
];

/// `GET /v1/available-actions/{platform}`.
pub const ACTION_FILTERS: &[Param] = &[
    text("title", "Actions whose title contains this, ignoring case"),
    query(
        "key",
        Kind::List,
        "Actions with one of these keys, e.g. `github-create-issue`",
    ),
    query(
        "method",
        Kind::OneOf {
            values: crate::runtime::manifest::HTTP_METHODS,
            default: None,
        },
        "Actions using this HTTP method upstream (any case)",
    ),
    LIMIT,
    PAGE,
];

/// `GET /v1/tools`.
pub const TOOL_FORMAT: &[Param] = &[query(
    "format",
    Kind::OneOf {
        values: &["openai", "anthropic", "mcp"],
        default: Some("openai"),
    },
    "Whose tool-definition format",
)];

/// `GET /v1/logs`.
pub const LOG_FILTERS: &[Param] = &[
    query("integration", Kind::List, "Calls of one of these integrations"),
    query("endpoint", Kind::List, "Calls of one of these endpoints"),
    query(
        "connectionKey",
        Kind::List,
        "Calls made with one of these connections (keys as the vault API lists them)",
    ),
    query(
        "outcome",
        Kind::OneOf {
            values: crate::error::OUTCOMES,
            default: None,
        },
        "Calls with this outcome: `ok`, `client_closed` or an error code",
    ),
    text("keyPrefix", "Calls made with the API key of this prefix"),
    text("transactionKey", "The call with this transaction key"),
    text("requestId", "Calls sent with this `X-Request-Id`"),
    query(
        "since",
        Kind::Time,
        "Calls at or after this time: a UTC time such as `2030-01-31T12:00:00Z`, or Unix milliseconds",
    ),
    query(
        "before",
        Kind::Integer {
            min: 1,
            max: i64::MAX,
            default: None,
        },
        "Calls logged before the row with this `id`: give the last row's `id` to read the next page, which new calls do not shift (as `page` does)",
    ),
    query(
        "upstreamStatus",
        Kind::StatusOrClass,
        "Calls whose upstream answered with this status (`404`) or class (`5xx`)",
    ),
    LIMIT,
    PAGE,
];

/// `POST /mcp`: the connection tool calls use. Nothing else is accepted in the query.
pub const MCP_CONNECTION: &[Param] = &[
    text("identity", "Tool calls use this identity's connection"),
    text(
        "connection_key",
        "Tool calls use this connection (also `connectionKey`; not both)",
    ),
    text("connectionKey", "The same as `connection_key`"),
    text(
        "identity_type",
        "The kind of owner `identity` is (user, team, organization, project): only a connection made for that kind is used (also `identityType`; not both)",
    ),
    text("identityType", "The same as `identity_type`"),
];

/// `GET /connect/oauth/callback`: what the provider sends back.
pub const OAUTH_CALLBACK: &[Param] = &[
    text("code", "The authorization code"),
    text("state", "The state the flow started with"),
    text(
        "error",
        "The provider's error code, when the user or provider refused",
    ),
    text("error_description", "The provider's explanation"),
];

/// `POST /v1/{integration}/{endpoint}`.
pub const EXECUTE: &[Param] = &[Param {
    name: "idempotency-key",
    place: Place::Header,
    kind: Kind::Text,
    description: "Run the call once: a retry with the same key and request within 24 hours gets the first \
        call's reply (marked `idempotent-replayed: true`) instead of running the action again; 1 to 255 \
        printable ASCII characters, per API key",
}];

/// `ANY /v1/passthrough/{path}`: the connection to call through.
pub const PASSTHROUGH_CONNECTION: &[Param] = &[
    Param {
        name: "x-sluice-connection-key",
        place: Place::Header,
        kind: Kind::Text,
        description: "The connection whose platform and credential to use (this or `x-pica-connection-key` is required)",
    },
    Param {
        name: "x-pica-connection-key",
        place: Place::Header,
        kind: Kind::Text,
        description: "The same, in Pica's spelling",
    },
];

/// The JSON Schema of a parameter's value.
pub fn schema(kind: Kind) -> Value {
    match kind {
        Kind::Text => json!({"type": "string"}),
        Kind::List => json!({"type": "array", "items": {"type": "string"}}),
        Kind::ConnectionIds => json!({"type": "array", "items": {
            "type": "string", "pattern": "^conn_[0-9]+$", "examples": ["conn_7"]
        }}),
        Kind::Boolean => json!({"type": "boolean"}),
        Kind::StatusOrClass => json!({
            "type": "string", "pattern": "^([1-5][0-9][0-9]|[1-5][xX][xX])$", "examples": ["5xx", "404"]
        }),
        Kind::Time => json!({"anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "integer", "minimum": 0}
        ]}),
        Kind::OneOf { values, default } => {
            let mut schema = json!({"type": "string", "enum": values});
            if let Some(default) = default {
                schema["default"] = json!(default);
            }
            schema
        }
        Kind::Integer { min, max, default } => {
            let mut schema = json!({"type": "integer", "minimum": min, "maximum": max});
            if let Some(default) = default {
                schema["default"] = json!(default);
            }
            schema
        }
    }
}

/// The parameter object of `param`, inline.
fn object(param: &Param) -> Value {
    let mut object = json!({
        "name": param.name,
        "in": match param.place {
            Place::Query => "query",
            Place::Header => "header",
        },
        "description": param.description,
        "schema": schema(param.kind),
    });
    if matches!(param.kind, Kind::List | Kind::ConnectionIds) {
        // `tags=a,b`: one value, comma-separated (a repeated parameter is refused).
        object["style"] = json!("form");
        object["explode"] = json!(false);
    }
    object
}

/// The parameter object of `param`: a reference for shared ones.
pub fn render(param: &Param) -> Value {
    if SHARED.contains(param) {
        json!({"$ref": format!("#/components/parameters/{}", param.name)})
    } else {
        object(param)
    }
}

/// `components/parameters`.
pub fn shared() -> Map<String, Value> {
    SHARED
        .iter()
        .map(|param| (param.name.to_owned(), object(param)))
        .collect()
}
