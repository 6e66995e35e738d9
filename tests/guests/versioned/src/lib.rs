//! One connector, two builds: v1 and v2 (feature `v2`), which also asks for one more outbound
//! host. Its `version` endpoint answers with the version without any upstream call.

use sluice_sdk::{Auth, Connector, Endpoint, Error, Manifest, Output, Params, export_connector, json};

struct Versioned;

const VERSION: &str = if cfg!(feature = "v2") { "2.0.0" } else { "1.0.0" };

impl Connector for Versioned {
    fn describe() -> Manifest {
        if cfg!(feature = "describe-panics") {
            panic!("describe broke on purpose");
        }
        let manifest = Manifest::new("versioned", "Versioned", VERSION)
            .base_url("https://api.versioned.test")
            .auth(Auth::None)
            .endpoint(Endpoint::new("version", "GET", "/version"));
        if cfg!(feature = "v2") {
            manifest.allow_host("https://extra.versioned.test")
        } else {
            manifest
        }
    }

    fn invoke(endpoint: &str, _params: Params) -> Result<Output, Error> {
        match endpoint {
            "version" => Output::json(200, &json!({"version": VERSION})),
            other => Err(Error::unknown_endpoint(other)),
        }
    }
}

export_connector!(Versioned);
