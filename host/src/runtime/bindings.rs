//! The only `bindgen!` in the host: Rust types and traits for the `sluice:connector@0.1.0` world.

wasmtime::component::bindgen!({
    path: "../wit/since_v0.1.0",
    world: "connector-world",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::exports::sluice::connector::connector::{
    AuthScheme, ConnectorError, Endpoint as WitEndpoint, Manifest as WitManifest, Output,
};
pub use self::sluice::connector::types::{Header, HttpError, Level, Request, Response};
