//! The template connector: copy this crate to start a new one.
//!
//! `say` answers without any upstream call; `anything` posts the params to the upstream's
//! `/anything` endpoint (httpbin-style) and passes its answer through.

use sluice_sdk::{Auth, Connector, Endpoint, Error, Manifest, Output, Params, export_connector, http, json};

struct Echo;

impl Connector for Echo {
    fn describe() -> Manifest {
        Manifest::new("echo", "Echo", env!("CARGO_PKG_VERSION"))
            .description("Echoes params back; the starting point for new connectors")
            .category("developer-tools")
            .base_url("https://httpbin.org")
            .auth(Auth::None)
            .endpoint(
                Endpoint::new("say", "GET", "/")
                    .title("Echo params")
                    .description("Returns the params unchanged, without calling any upstream.")
                    .example("Hello", json!({"message": "hello"})),
            )
            .endpoint(
                Endpoint::new("anything", "POST", "/anything")
                    .title("Post params upstream")
                    .description("Sends the params as a JSON body to the upstream and returns its answer.")
                    .example("Hello", json!({"message": "hello"})),
            )
    }

    fn invoke(endpoint: &str, params: Params) -> Result<Output, Error> {
        match endpoint {
            "say" => Output::json(200, &params.value()?),
            "anything" => Ok(http::post("/anything").json(&params.value()?)?.send()?.into()),
            other => Err(Error::unknown_endpoint(other)),
        }
    }
}

export_connector!(Echo);
