//! One connector, two builds: v1 and v2 (feature `v2`), which also asks for one more outbound
//! host. (Feature `describe-panics` breaks it, `describe-loops` makes it never answer; `plain-http`
//! makes it a bearer-token connector whose upstream is plain http, `basic-auth` one that takes a user
//! name and password.) Its `version` endpoint answers with the version without any upstream call.

use sluice_sdk::{Auth, Connector, Endpoint, Error, Manifest, Output, Params, export_connector, json};

struct Versioned;

const VERSION: &str = if cfg!(feature = "v2") { "2.0.0" } else { "1.0.0" };

impl Connector for Versioned {
    fn describe() -> Manifest {
        if cfg!(feature = "describe-panics") {
            panic!("describe broke on purpose");
        }
        if cfg!(feature = "describe-loops") {
            loop {
                std::hint::spin_loop();
            }
        }
        let manifest = Manifest::new("versioned", "Versioned", VERSION)
            .endpoint(Endpoint::new("version", "GET", "/version"));
        let manifest = if cfg!(feature = "plain-http") {
            manifest.base_url("http://api.versioned.test").auth(Auth::Bearer)
        } else if cfg!(feature = "basic-auth") {
            manifest.base_url("https://api.versioned.test").auth(Auth::Basic)
        } else {
            manifest.base_url("https://api.versioned.test").auth(Auth::None)
        };
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
