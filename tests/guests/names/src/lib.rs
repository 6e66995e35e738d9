//! A connector whose names are awkward on purpose. Its id `hostile-huge` and endpoint `url`
//! give the action id `hostile-huge-url`, which the `hostile` guest's `huge_url` also has; its
//! second endpoint's tool name (`hostile-huge__` + 57 characters) is longer than LLM APIs allow.
//! Both endpoints answer with their own name, without any upstream call.

use sluice_sdk::{Auth, Connector, Endpoint, Error, Manifest, Output, Params, export_connector, json};

struct Names;

/// An endpoint name that makes its tool name 71 characters long.
const LONG: &str = "list_everything_a_connector_author_might_describe_at_length";

impl Connector for Names {
    fn describe() -> Manifest {
        Manifest::new("hostile-huge", "Names", env!("CARGO_PKG_VERSION"))
            .base_url("https://api.names.test")
            .auth(Auth::None)
            .endpoint(Endpoint::new("url", "GET", "/url"))
            .endpoint(Endpoint::new(LONG, "GET", "/long"))
    }

    fn invoke(endpoint: &str, _params: Params) -> Result<Output, Error> {
        match endpoint {
            "url" | LONG => Output::json(200, &json!({"endpoint": endpoint})),
            other => Err(Error::unknown_endpoint(other)),
        }
    }
}

export_connector!(Names);
