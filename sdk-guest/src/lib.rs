//! # sluice-sdk: write a Sluice connector in Rust
//!
//! A connector describes an upstream API and turns a caller's action into HTTP requests.
//! It runs inside the Sluice gateway as a sandboxed WebAssembly component: it can reach the
//! network only through [`http`], and it never sees credentials — the gateway injects them
//! into every request sent to the connection's own origin.
//!
//! Implement [`Connector`] and export it with [`export_connector!`]:
//!
//! ```no_run
//! use sluice_sdk::{export_connector, http, json, Auth, Connector, Endpoint, Error, Manifest, Output, Params};
//!
//! struct Weather;
//!
//! #[derive(serde::Deserialize)]
//! struct Forecast {
//!     city: String,
//!     days: Option<u8>,
//! }
//!
//! impl Connector for Weather {
//!     fn describe() -> Manifest {
//!         Manifest::new("weather", "Weather", env!("CARGO_PKG_VERSION"))
//!             .description("Forecasts from the Example Weather API")
//!             .base_url("https://api.weather.example")
//!             .auth(Auth::Header("x-api-key".into()))
//!             .endpoint(
//!                 Endpoint::new("forecast", "GET", "/v1/forecast")
//!                     .title("Get a forecast")
//!                     .params_schema(json!({
//!                         "type": "object",
//!                         "required": ["city"],
//!                         "properties": {
//!                             "city": {"type": "string"},
//!                             "days": {"type": "integer", "minimum": 1, "maximum": 14}
//!                         }
//!                     }))
//!                     .example("Three days in Oslo", json!({"city": "Oslo", "days": 3})),
//!             )
//!     }
//!
//!     fn invoke(endpoint: &str, params: Params) -> Result<Output, Error> {
//!         match endpoint {
//!             "forecast" => {
//!                 let p: Forecast = params.parse()?;
//!                 let days = p.days.unwrap_or(1);
//!                 Ok(http::get("/v1/forecast").query("city", &p.city).query("days", days).send()?.into())
//!             }
//!             other => Err(Error::unknown_endpoint(other)),
//!         }
//!     }
//! }
//!
//! export_connector!(Weather);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type `cdylib`) and drop
//! the `.wasm` file into the gateway's plugins directory.

// Lets the generated bindings name this crate the same way from inside and outside it.
extern crate self as sluice_sdk;

mod error;
pub mod http;
pub mod log;
mod manifest;
mod output;
mod params;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use error::{Error, HttpError};
pub use manifest::{Auth, Endpoint, Manifest, OAuth2};
pub use output::Output;
pub use params::Params;
pub use serde_json::{Value, json};

/// The generated WIT bindings. Not part of the stable API; use the re-exported types instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/since_v0.2.0",
        world: "connector-world",
        pub_export_macro: true,
        export_macro_name: "__export_connector_world",
        default_bindings_module: "::sluice_sdk::bindings",
        runtime_path: "::sluice_sdk::__private::wit_bindgen::rt",
    });
}

/// Implementation details the [`export_connector!`] macro needs. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// What a connector implements: a description of itself and one function that runs an action.
///
/// Both are associated functions because the gateway runs every request in a fresh sandbox:
/// there is no state to carry from one call to the next.
pub trait Connector {
    /// Describe the connector: identity, upstream, auth scheme and endpoints.
    ///
    /// Called once when the gateway loads the component. Must not send requests.
    fn describe() -> Manifest;

    /// Run the action `endpoint` with the caller's `params`.
    ///
    /// Return the upstream answer (usually `response.into()`), or an [`Error`]; `?` works on
    /// [`Params::parse`], [`http::RequestBuilder::send`] and the [`http::Response`] readers.
    fn invoke(endpoint: &str, params: Params) -> Result<Output, Error>;
}

/// Export a type implementing [`Connector`] as this component's connector.
///
/// Write it once, at the top level of the connector crate:
///
/// ```ignore
/// sluice_sdk::export_connector!(MyConnector);
/// ```
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        // Exports exist only in the component; a native build (unit tests, clippy) of the
        // same crate links without them, since their names are not valid native symbols.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            // The generated export macro takes a plain identifier, hence the alias.
            type __SluiceExportedConnector = $crate::__Adapter<$connector>;
            $crate::bindings::__export_connector_world!(__SluiceExportedConnector);
        };
        // Natively, keep the implementation alive so it is still type-checked and linted.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn(&str, $crate::Params) -> Result<$crate::Output, $crate::Error> =
            <$connector as $crate::Connector>::invoke;
    };
}

/// Bridges a [`Connector`] to the generated WIT export trait. Used by [`export_connector!`].
#[doc(hidden)]
pub struct __Adapter<C>(std::marker::PhantomData<C>);

impl<C: Connector> bindings::exports::sluice::connector::connector::Guest for __Adapter<C> {
    fn describe() -> bindings::exports::sluice::connector::connector::Manifest {
        log_panics();
        C::describe().into_wit()
    }

    fn invoke(
        endpoint: String,
        params_json: String,
    ) -> Result<
        bindings::exports::sluice::connector::connector::Output,
        bindings::exports::sluice::connector::connector::ConnectorError,
    > {
        log_panics();
        C::invoke(&endpoint, Params::from_json(params_json))
            .map(Output::into_wit)
            .map_err(Error::into_wit)
    }
}

/// Send panic messages to the gateway's log, once per instance (each request gets a fresh one).
///
/// A panic ends the request with `connector_trap`; its message and location become one error
/// line through [`log`], under the request's transaction key, in place of the standard
/// library's text on stderr (several lines, logged by newer gateways only, at the end of the
/// call).
fn log_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.payload_as_str().unwrap_or("Box<dyn Any>");
            match info.location() {
                Some(at) => log::error(&format!("panicked at {at}: {message}")),
                None => log::error(&format!("panicked: {message}")),
            }
        }));
    });
}

/// The README's connector example, compiled as a doctest so it cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
